"""Helpers for testing fr-edge and its plugins (also used by third-party plugin authors).

The pytest fixtures live in :mod:`fr_core.testing.pytest_plugin`, which pytest loads
automatically once fr-edge is installed (entry point ``pytest11``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

DATA_ENV = "FR_TEST_DATA"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: object, reason: str) -> None:
    """A missing prerequisite: a failure in CI (``CI=true``), a skip elsewhere."""
    if condition:
        return
    import pytest  # only when used: fr_core.testing must import without pytest installed

    if in_ci():
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def shared_data_dir(start: Path | None = None) -> Path | None:
    """The shared test data folder: ``$FR_TEST_DATA``, else ``../shared/data`` from the repo."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for parent in (here, *here.parents):
        candidate = parent.parent / "shared" / "data"
        if (parent / "pyproject.toml").exists() and candidate.is_dir():
            return candidate
    return None


def shared_models_dir(start: Path | None = None) -> Path | None:
    """The shared model files (MiniFASNet...): ``$FR_TEST_MODELS``, else ``models`` beside
    the shared data folder."""
    env = os.environ.get("FR_TEST_MODELS")
    if env:
        return Path(env)
    data = shared_data_dir(start)
    return data.parent / "models" if data is not None else None


def wait_for(cond: Callable[[], object], timeout: float = 20.0, poll: float = 0.02) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; True if it became true.
    Tests wait on conditions with a deadline instead of sleeping a fixed time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll)
    return bool(cond())
