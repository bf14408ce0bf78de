"""Key providers ``file``, ``env`` and ``credential``: where the device key that seals the
face templates comes from (fr_core.keys, docs/privacy.md)."""

from __future__ import annotations

from typing import Any

from fr_core import hookimpl
from fr_core.errors import ConfigError
from fr_core.keys import (
    CredentialKeyConfig,
    CredentialKeyProvider,
    EnvKeyConfig,
    EnvKeyProvider,
    FileKeyConfig,
    FileKeyProvider,
)


def _file_provider(cfg: FileKeyConfig, ctx: Any) -> FileKeyProvider:
    extras = getattr(ctx, "extras", {})
    path = cfg.path or extras.get("default_key_file")
    if path is None:
        raise ConfigError(
            "key.options.path: the file key provider needs a path here (the database is "
            "not a SQLite file, so there is no default beside it)"
        )
    return FileKeyProvider(path, cfg.create and extras.get("create_key", True))


@hookimpl
def fr_register_key_providers(register: Any) -> None:
    register(
        "file",
        _file_provider,
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
