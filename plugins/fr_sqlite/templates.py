"""Face templates sealed at rest with the device key (schema 5).

Each embedding is stored as ``0x01 | nonce (12) | AES-256-GCM(ciphertext + tag)``, under a key
derived from the device key (HKDF-SHA256, its own ``info``), with a fresh random nonce per row
and the user id, model and dimension as associated data: a row copied onto another employee,
or another model, fails authentication instead of matching. The outbox's per-image keys are
wrapped the same way under a second derived key, with the event id as associated data, so
the database file alone opens neither templates nor images.

A key id (a third HKDF output, 8 bytes in hex) is kept in the database: it tells a wrong or
lost key at start without trying to decrypt anything, and names the key in ``fr-edge status``
without revealing it.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fr_core.keys import KEY_BYTES
from fr_core.storage import StorageError

FORMAT = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = len(FORMAT) + NONCE_BYTES + TAG_BYTES


def _derive(key: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


class TemplateSealer:
    """Seals and opens templates and wraps outbox image keys with one device key."""

    def __init__(self, device_key: bytes, source: str) -> None:
        if len(device_key) != KEY_BYTES:
            raise ValueError(f"the device key must be {KEY_BYTES} bytes")
        self.source = source  # where the key came from (a provider's describe())
        self.key_id = _derive(device_key, b"fr-edge key id v1", 8).hex()
        self._templates = AESGCM(_derive(device_key, b"fr-edge templates v1"))
        self._wrap = AESGCM(_derive(device_key, b"fr-edge outbox image keys v1"))

    @staticmethod
    def _aad(user_id: str, model: str | None, dim: int) -> bytes:
        return b"\0".join((b"template", user_id.encode(), (model or "").encode(), b"%d" % dim))

    def seal(self, user_id: str, model: str | None, raw: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        aad = self._aad(user_id, model, len(raw) // 4)
        return FORMAT + nonce + self._templates.encrypt(nonce, raw, aad)

    def open(self, user_id: str, model: str | None, blob: bytes | None) -> bytes:
        if blob is None or len(blob) < OVERHEAD or blob[:1] != FORMAT:
            raise StorageError(
                f"the template of {user_id!r} is not sealed: the database is damaged"
            )
        dim = (len(blob) - OVERHEAD) // 4
        try:
            return self._templates.decrypt(
                blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], self._aad(user_id, model, dim)
            )
        except InvalidTag as exc:
            raise StorageError(
                f"the template of {user_id!r} fails authentication (a row moved to another "
                "employee or model, or damaged): run a full resync"
            ) from exc

    def wrap(self, event_id: str, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT + nonce + self._wrap.encrypt(nonce, key, b"outbox key\0" + event_id.encode())

    def unwrap(self, event_id: str, blob: bytes | None) -> bytes:
        if blob is None or len(blob) < OVERHEAD or blob[:1] != FORMAT:
            raise StorageError(f"the image key of event {event_id} is not wrapped: damaged")
        try:
            return self._wrap.decrypt(
                blob[1 : 1 + NONCE_BYTES],
                blob[1 + NONCE_BYTES :],
                b"outbox key\0" + event_id.encode(),
            )
        except InvalidTag as exc:
            raise StorageError(f"the image key of event {event_id} fails authentication") from exc
