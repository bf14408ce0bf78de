from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=10_000, deadline=None)
settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Install a throw-away distribution with an ``fr_core`` entry point on sys.path.

    ``make(name, module_source)`` writes ``<name>.py`` and a ``.dist-info`` whose entry point
    names it, so ``importlib.metadata`` finds it exactly like an installed plugin.
    """
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(name: str, source: str, version: str = "0.0.1") -> None:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[fr_core]\n{name} = {name}\n")

    yield make
    for mod in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[mod]
