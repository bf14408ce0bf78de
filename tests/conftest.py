from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=10_000, deadline=None)
# `make fuzz` sets FR_HYPOTHESIS_PROFILE=long: 10,000 examples per property
settings.load_profile(os.environ.get("FR_HYPOTHESIS_PROFILE", "ci"))

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


# --- secrets never reach test output -------------------------------------------------------
#
# Every test's captured stdout, stderr and log records, and the text of every failure, are
# searched for the secrets the tests use (module-level constants named *KEY*, *PASSWORD*,
# *SECRET*, *TOKEN* in the test modules, plus the ones below used inline). One found fails the
# session, naming the test and the constant, never the value.

INLINE_SECRETS = {"rtsp password": "hunter2-secret"}
_SECRET_NAME = re.compile(r"(KEY|PASSWORD|SECRET|TOKEN)")
_leaks: list[tuple[str, str]] = []


def _known_secrets() -> dict[str, str]:
    found = dict(INLINE_SECRETS)
    for name, module in list(sys.modules.items()):
        if not (name.startswith("tests.") or name.startswith("test_")):
            continue
        for attr, value in vars(module).items():
            secret_like = attr.isupper() and _SECRET_NAME.search(attr)
            if secret_like and isinstance(value, str) and len(value) >= 8:
                found[f"{name}.{attr}"] = value
    return found


def pytest_runtest_logreport(report):
    texts = [content for _, content in report.sections]
    if report.longrepr is not None:
        texts.append(str(report.longrepr))
    blob = "\n".join(texts)
    if not blob:
        return
    for label, secret in _known_secrets().items():
        if secret in blob:
            _leaks.append((report.nodeid, label))


def pytest_sessionfinish(session, exitstatus):
    if _leaks:
        lines = "\n".join(f"  {test}: {label}" for test, label in sorted(set(_leaks)))
        session.config.get_terminal_writer().line(
            f"\nSECRETS IN TEST OUTPUT (values not shown):\n{lines}", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
