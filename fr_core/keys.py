"""The device key: where the 32-byte key that seals the face templates (and wraps the outbox
image keys) comes from. It never lives in the data folder, so the database file alone opens
nothing (docs/privacy.md).

Three providers ship (registered by the in-tree ``fr_keys`` plugin; a third-party package
registers more with ``fr_register_key_providers``):

- ``file``: a key file outside the data folder, created 0400 on first start;
- ``env``: an environment variable holding the key in hex or base64;
- ``credential``: a systemd credential (``LoadCredential=``, or ``LoadCredentialEncrypted=``
  sealed to the TPM, which on a Jetson is the OP-TEE fTPM), read from
  ``$CREDENTIALS_DIRECTORY``.

A provider's ``load()`` returns the key or raises :class:`KeyUnavailableError` saying what to
set. ``describe()`` says where the key comes from, never what it is.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from fr_core.errors import FrEdgeError
from fr_core.logsetup import register_secret

log = logging.getLogger(__name__)

KEY_BYTES = 32
DEFAULT_VARIABLE = "FR_EDGE_DEVICE_KEY"
DEFAULT_CREDENTIAL = "fr-edge-device-key"


class KeyUnavailableError(FrEdgeError):
    """The device key cannot be read; the message says from where and what to do."""


def default_key_file() -> Path:
    """``$XDG_CONFIG_HOME/fr-edge/device.key`` (``~/.config/fr-edge/device.key``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fr-edge" / "device.key"


def parse_key(data: bytes, where: str) -> bytes:
    """A key given as 32 raw bytes, 64 hex digits or base64 of 32 bytes (whitespace around
    the text form is ignored)."""
    if len(data) == KEY_BYTES:
        return bytes(data)
    text = data.strip()
    try:
        if len(text) == 2 * KEY_BYTES:
            return binascii.unhexlify(text)
        decoded = base64.b64decode(text, validate=True)
        if len(decoded) == KEY_BYTES:
            return decoded
    except (binascii.Error, ValueError):
        pass
    raise KeyUnavailableError(
        f"{where} does not hold a device key: expected {KEY_BYTES} raw bytes, "
        f"{2 * KEY_BYTES} hex digits or base64 of {KEY_BYTES} bytes ({len(data)} bytes found)"
    )


class FileKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(
        None, description="the key file; default $XDG_CONFIG_HOME/fr-edge/device.key"
    )
    create: bool = Field(True, description="create a new random key (mode 0400) when missing")


class FileKeyProvider:
    """A key file outside the data folder."""

    def __init__(self, path: Path | None = None, create: bool = True) -> None:
        self.path = Path(path) if path is not None else default_key_file()
        self.create = create

    def describe(self) -> str:
        return f"file {self.path}"

    def load(self) -> bytes:
        if not self.path.exists():
            if not self.create:
                raise KeyUnavailableError(
                    f"the device key file {self.path} does not exist (create: false); restore "
                    "it from your backup, or allow create to start with a new key (the "
                    "templates then come back by a full resync)"
                )
            return self._create()
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            os.chmod(self.path, 0o400)
            log.warning("device key %s was readable by others (mode %o); now 0400", self.path, mode)
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise KeyUnavailableError(
                f"cannot read the device key file {self.path}: {exc}"
            ) from exc
        return parse_key(data, f"the device key file {self.path}")

    def _create(self) -> bytes:
        key = os.urandom(KEY_BYTES)
        self.path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        except FileExistsError:  # another process made it first: use theirs
            return self.load()
        except OSError as exc:
            raise KeyUnavailableError(
                f"cannot create the device key file {self.path}: {exc}"
            ) from exc
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning(
            "created a new device key at %s: keep a copy apart from the device; without it "
            "the templates come back only by a full resync",
            self.path,
        )
        return key


class EnvKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variable: str = Field(
        DEFAULT_VARIABLE, min_length=1, description="the variable holding the key (hex or base64)"
    )


class EnvKeyProvider:
    """The key in an environment variable (hex or base64), e.g. from a secrets manager."""

    def __init__(self, variable: str = DEFAULT_VARIABLE) -> None:
        self.variable = variable

    def describe(self) -> str:
        return f"environment variable {self.variable}"

    def load(self) -> bytes:
        value = os.environ.get(self.variable)
        if not value:
            raise KeyUnavailableError(
                f"the environment variable {self.variable} is not set: set it to the device "
                f"key ({2 * KEY_BYTES} hex digits or base64 of {KEY_BYTES} bytes)"
            )
        register_secret(value)
        return parse_key(value.encode(), f"the environment variable {self.variable}")


class CredentialKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        DEFAULT_CREDENTIAL,
        pattern=r"^[A-Za-z0-9_.@-]{1,255}$",
        description="the credential's name in the service's LoadCredential[Encrypted]=",
    )


class CredentialKeyProvider:
    """A systemd credential: ``$CREDENTIALS_DIRECTORY/NAME`` (docs/privacy.md shows the unit
    lines, and how to seal it to a Jetson's fTPM with ``systemd-creds``)."""

    def __init__(self, name: str = DEFAULT_CREDENTIAL) -> None:
        self.name = name

    def describe(self) -> str:
        return f"systemd credential {self.name}"

    def load(self) -> bytes:
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise KeyUnavailableError(
                f"$CREDENTIALS_DIRECTORY is not set: run fr-edge as a systemd service with "
                f"LoadCredential={self.name}:PATH (or LoadCredentialEncrypted=) to use the "
                "credential key provider"
            )
        path = Path(folder) / self.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyUnavailableError(
                f"cannot read the systemd credential {self.name} ({path}): {exc}"
            ) from exc
        return parse_key(data, f"the systemd credential {self.name}")
