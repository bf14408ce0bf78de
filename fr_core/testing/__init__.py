"""Helpers for testing fr-edge and its plugins (also used by third-party plugin authors).

The pytest fixtures live in :mod:`fr_core.testing.pytest_plugin`, which pytest loads
automatically once fr-edge is installed (entry point ``pytest11``).
"""

from __future__ import annotations

import os
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
