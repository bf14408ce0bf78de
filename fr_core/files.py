"""Small file helpers shared by the plugins: where caches live, and writes that are never
seen half-done."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# the photo files commands and the simulated camera read from a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def cache_root() -> Path:
    """``$FR_EDGE_CACHE``, else ``$XDG_CACHE_HOME/fr-edge``, else ``~/.cache/fr-edge``:
    converted models and built engines live in sub-folders of it."""
    base = os.environ.get("FR_EDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fr-edge"
    )
    return Path(base)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, synced and
    renamed: a reader sees the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
