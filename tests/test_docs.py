"""Docs stay in step with the code: hook headings, config keys, README commands."""

from __future__ import annotations

import inspect
import re

from fr_core import hookspecs
from fr_core.config import AppConfig

from .conftest import REPO


def hook_signatures() -> dict[str, str]:
    out = {}
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(fn, "fr_core_spec"):
            sig = inspect.signature(fn)
            params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
            out[name] = f"{name}({params}) -> {sig.return_annotation}"
    return out


def test_every_hook_has_a_heading_with_its_exact_signature():
    text = (REPO / "docs" / "plugin_hooks.md").read_text()
    headings = re.findall(r"^#{2,4} `(fr_\w+\(.*\) -> .*)`$", text, flags=re.M)
    expected = hook_signatures()
    assert len(expected) >= 12
    assert sorted(headings) == sorted(expected.values())


def test_every_config_key_is_documented():
    text = (REPO / "docs" / "config.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    assert set(AppConfig.model_fields) <= documented, set(AppConfig.model_fields) - documented


def test_readme_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```(?:sh|bash)?\n(.*?)```", text, flags=re.S).group(1)
    assert [line for line in first_block.splitlines() if line.strip()] == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_make_test_gets_mosquitto_or_says_how():
    """Issue 12, item 13: `make test` on a fresh machine installs mosquitto when it can (root
    with apt-get) and otherwise stops at once with the one command to run."""
    import subprocess

    def make(**var):
        args = ["make", "-s", "mosquitto", "MOSQUITTO=fr-edge-no-such-broker"]
        args += [f"{k}={v}" for k, v in var.items()]
        return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)

    refused = make(FR_UID=1000)
    assert refused.returncode != 0
    assert "run  sudo apt-get install -y fr-edge-no-such-broker" in refused.stdout
    installs = make(FR_UID=0, APT_GET="echo")  # root: apt-get is called (here a stand-in)
    assert installs.returncode == 0
    assert "install -y -qq fr-edge-no-such-broker" in installs.stdout
    assert "mosquitto" in (REPO / "Makefile").read_text().split("\ntest:")[1].split("\n")[0]


def test_every_conformance_test_says_what_it_checks():
    """Integrators read the suite's tests to learn the contract: each has a docstring."""
    import ast

    tree = ast.parse((REPO / "fr_core" / "testing" / "conformance.py").read_text())
    tests = [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]
    assert len(tests) >= 8
    assert [t.name for t in tests if not ast.get_docstring(t)] == []


def test_every_liveness_cue_option_is_documented_with_its_default():
    """docs/config.md's tables of the liveness cues list every option of each cue's config
    with the default the code has (a changed default fails here, not in a user's hands)."""
    from fr_cpu.context import ContextConfig
    from fr_cpu.motion import MotionConfig
    from fr_cpu.planes import DepthLivenessConfig, IrLivenessConfig

    text = (REPO / "docs" / "config.md").read_text()
    missing = [
        f"{cls.__name__}.{name} = {field.default!r}"
        for cls in (ContextConfig, MotionConfig, IrLivenessConfig, DepthLivenessConfig)
        for name, field in cls.model_fields.items()
        if f"| `{name}` | `{field.default}` |" not in text
    ]
    assert not missing, missing
