"""Key providers ``file``, ``env`` and ``credential``: where the device key that seals the
face templates comes from (fr_core.keys, docs/privacy.md)."""

from __future__ import annotations

from typing import Any

from fr_core import hookimpl
from fr_core.keys import (
    CredentialKeyConfig,
    CredentialKeyProvider,
    EnvKeyConfig,
    EnvKeyProvider,
    FileKeyConfig,
    FileKeyProvider,
)


@hookimpl
def fr_register_key_providers(register: Any) -> None:
    register(
        "file",
        lambda cfg, ctx: FileKeyProvider(cfg.path, cfg.create),
        FileKeyConfig,
        description="a key file outside the data folder, created 0400 on first start",
    )
    register(
        "env",
        lambda cfg, ctx: EnvKeyProvider(cfg.variable),
        EnvKeyConfig,
        description="an environment variable holding the key (hex or base64)",
    )
    register(
        "credential",
        lambda cfg, ctx: CredentialKeyProvider(cfg.name),
        CredentialKeyConfig,
        description="a systemd credential ($CREDENTIALS_DIRECTORY), e.g. sealed to the TPM",
    )
