"""Outbox images sealed at rest, so that deleting one needs no overwriting of its pages.

Each queued image is encrypted with its own random AES-256-GCM key, kept in a small row of
``outbox_keys`` apart from the image. Acknowledging an event deletes both with SQLite's
``secure_delete=FAST``: the key's cell on its b-tree page is zeroed (FAST purges b-tree
pages), the image's overflow pages go to the freelist as ciphertext nobody can open any more
("crypto-shredding"). With ``secure_delete=ON`` the same promise (the image is gone once
acknowledged) cost overwriting every image page with zeros: twice the flash writes of the
images themselves, and most of the time of a drain.

One key per image, so a fixed nonce is safe; the event id is the associated data, so an
image cannot be passed off as another event's.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fr_core.storage import StorageError

KEY_BYTES = 32
_NONCE = bytes(12)


def seal(event_id: str, image: bytes) -> tuple[bytes, bytes]:
    """(key, ciphertext) of one image."""
    key = os.urandom(KEY_BYTES)
    return key, AESGCM(key).encrypt(_NONCE, image, event_id.encode())


def unseal(event_id: str, key: bytes | None, sealed: bytes) -> bytes:
    if key is None or len(key) != KEY_BYTES:
        raise StorageError(
            f"outbox image of event {event_id} has no valid key: the database is damaged"
        )
    try:
        return AESGCM(key).decrypt(_NONCE, sealed, event_id.encode())
    except InvalidTag:
        raise StorageError(
            f"outbox image of event {event_id} fails its integrity check: the database is damaged"
        ) from None
