"""The device key: where the 32-byte key that seals the face templates (and wraps the outbox
image keys) comes from. It never lives in the data folder, so the database file alone opens
nothing (docs/privacy.md).

Three providers ship (registered by the in-tree ``fr_keys`` plugin; a third-party package
registers more with ``fr_register_key_providers``):

- ``file``: a key file outside the data folder, created 0400 on first start; by default
  ``<data folder>.key`` beside the database's folder (``/var/lib/fr-edge/data.key`` for
  ``/var/lib/fr-edge/data/faces.db``), so every command run on one database, whoever runs it,
  finds the same key;
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
import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fr_core.errors import FrEdgeError
from fr_core.logsetup import register_secret

log = logging.getLogger(__name__)

KEY_BYTES = 32
DEFAULT_VARIABLE = "FR_EDGE_DEVICE_KEY"
DEFAULT_CREDENTIAL = "fr-edge-device-key"


class KeyUnavailableError(FrEdgeError):
    """The device key cannot be read; the message says from where and what to do."""


def default_key_file(db_file: Path) -> Path:
    """The key file of a database when the config names none: ``<folder>.key`` beside the
    database's folder. It depends on the database only, never on who runs the command."""
    folder = Path(os.path.abspath(db_file)).parent
    return folder.with_name(folder.name + ".key")


def parse_key(data: bytes, where: str, *, raw: bool = True) -> bytes:
    """A key given as 64 hex digits or base64 of 32 bytes (whitespace around them ignored),
    or, when ``raw`` (files and credentials, not text variables), as 32 raw bytes."""
    if raw and len(data) == KEY_BYTES:
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
    forms = f"{2 * KEY_BYTES} hex digits or base64 of {KEY_BYTES} bytes"
    if raw:
        forms = f"{KEY_BYTES} raw bytes, " + forms
    empty = " (an empty file was never written: delete it to make a new key)" if not data else ""
    raise KeyUnavailableError(
        f"{where} does not hold a device key: expected {forms} ({len(data)} bytes found){empty}"
    )


class FileKeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(
        None, description="the key file (absolute); default <data folder>.key beside it"
    )
    create: bool = Field(True, description="create a new random key (mode 0400) when missing")

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_absolute():
            raise ValueError(
                f"{path} is relative: give an absolute path (a service's working folder may be /)"
            )
        return path


class FileKeyProvider:
    """A key file outside the data folder."""

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = Path(path)
        self.create = create

    def describe(self) -> str:
        return f"file {self.path}"

    def load(self) -> bytes:
        if not os.path.lexists(self.path):
            if not self.create:
                raise KeyUnavailableError(
                    f"the device key file {self.path} does not exist; restore it from your "
                    "backup, or run as the device's user with its config (this command does not "
                    "make a key: `fr-edge run` or `fr-edge sync` makes one for a new database)"
                )
            return self._create()
        try:
            data = self.path.read_bytes()
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except OSError as exc:
            raise KeyUnavailableError(
                f"cannot read the device key file {self.path}: {exc.strerror} (run as the "
                "device's user, or give it read access)"
            ) from exc
        if mode & 0o077:
            try:
                os.chmod(self.path, 0o400)
                log.warning(
                    "device key %s was readable by others (mode %o); now 0400", self.path, mode
                )
            except OSError:
                log.warning(
                    "device key %s is readable by others (mode %o) and this user cannot change "
                    "it: chmod 0400 it",
                    self.path,
                    mode,
                )
        return parse_key(data, f"the device key file {self.path}")

    def _create(self) -> bytes:
        """A new random key, written whole or not at all: into a temporary file, synced, then
        linked to its name (so two starts racing agree on one key) and the folder synced."""
        key = os.urandom(KEY_BYTES)
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".device-key-", dir=folder)
        except OSError as exc:
            raise KeyUnavailableError(
                f"cannot create the device key file {self.path}: {exc.strerror}"
            ) from exc
        try:
            os.fchmod(fd, 0o400)
            os.write(fd, key)
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:  # another process made it first: use theirs
                return self.load()
        except OSError as exc:
            raise KeyUnavailableError(
                f"cannot create the device key file {self.path}: {exc.strerror}"
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
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
        for form in {value, value.strip()}:
            register_secret(form)
        key = parse_key(value.encode(), f"the environment variable {self.variable}", raw=False)
        for form in (key.hex(), base64.b64encode(key).decode()):  # as it might be printed
            register_secret(form)
        return key


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
