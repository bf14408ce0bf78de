"""tests/examples/jsontcp: a complete transport for a protocol fr-edge does not have (JSON
lines over TLS), with its own harness (a TLS line server bridged into the reference broker's
store) overriding the suite's ``broker`` fixture: the worked example of a non-HTTPS, non-MQTT
harness that docs/writing_plugins.md points to. It was written from the docs alone (the
newcomer trial of issue 15); here its own tests, the conformance suite among them, must pass."""

from __future__ import annotations

from .conftest import REPO
from .test_scaffold import pytest_in


def test_the_jsontcp_example_passes_the_conformance_suite():
    done = pytest_in(REPO / "tests" / "examples" / "jsontcp")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "10 passed" in done.stdout  # nine conformance tests and its registration test
