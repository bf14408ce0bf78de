"""What importing fr_core costs: the original module's names load on first use, so a plugin's
``from fr_core import hookimpl`` and the pytest plugin (loaded into every pytest run where
fr-edge is installed) do not import the engine, the storage or the client (issue 15)."""

from __future__ import annotations

import subprocess
import sys

import fr_core


def test_every_exported_name_resolves_lazily():
    assert set(fr_core._LAZY) == set(fr_core.__all__) - {"__version__"}
    for name in fr_core.__all__:
        assert getattr(fr_core, name) is not None, name
    assert set(fr_core.__all__) <= set(dir(fr_core))


def test_the_pytest_plugin_and_hookimpl_import_nothing_heavy():
    probe = (
        "import sys, fr_core.testing.pytest_plugin\n"
        "from fr_core import hookimpl\n"
        "heavy = [m for m in ('fr_core.delivery.client', 'fr_core.pipeline.engine', "
        "'fr_core.storage', "
        "'fr_core.plugins', 'numpy', 'sqlalchemy', 'cv2') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_command_line_loads_a_stage_only_when_a_command_runs():
    """Why fr_core.app.cli may import inside functions (tests/test_layout.py): `fr-edge
    --help`, `config check` and friends load none of the stages' heavy modules."""
    probe = (
        "import sys, fr_core.app.cli\n"
        "heavy = [m for m in ('fr_core.pipeline.engine', 'fr_core.delivery.client', "
        "'fr_core.app.runner', 'fr_core.broker', 'fr_core.evaluation.identification', "
        "'sqlalchemy', 'cv2', 'requests', 'paho', 'onnx') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
