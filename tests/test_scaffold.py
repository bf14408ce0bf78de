"""`fr-edge plugin new transport NAME` (issue 15, item 2): the skeleton's conformance suite is
wired to its transport (every test reaches the skeleton's methods), passes once the methods
are written (here: filled in by delegating to the https transport, the shortest honest
implementation), and the package registers its transport and URL scheme."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fr_core.app.cli import main
from fr_core.config import config_from_mapping, validate_components
from fr_core.interfaces import ComponentKind

FILLED = """
from fr_https import HttpsTransport, HttpsTransportConfig


class RedisStreamsTransport:  # filled in: every call goes to an https transport
    def __init__(self, config, device_id, broker_url, api_key, allow_insecure):
        inner = HttpsTransportConfig(ca_bundle=config.ca_bundle)
        self._t = HttpsTransport(inner, device_id, broker_url, api_key, allow_insecure)

    def __getattr__(self, name):
        return getattr(self._t, name)

    def start(self):
        self._t.start()

    def stop(self, timeout=5.0):
        self._t.stop(timeout)
"""


def pytest_in(folder):
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("CI", None)  # the skeleton's own run, not this suite's CI rules
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture
def skeleton(tmp_path):
    out = CliRunner().invoke(
        main,
        [
            "plugin",
            "new",
            "transport",
            "redis_streams",
            "--dir",
            str(tmp_path),
            "--scheme",
            "rediss",
        ],
    )
    assert out.exit_code == 0, out.output
    root = tmp_path / "fr-edge-redis-streams-transport"
    assert f"cd {root} && pip install -e '.[test]' && pytest" in out.output
    return root


def test_the_skeleton_s_suite_reaches_its_transport(skeleton):
    pyproject = (skeleton / "pyproject.toml").read_text()
    assert '[project.entry-points.fr_core]\nfr_redis_streams = "fr_redis_streams"' in pyproject
    done = pytest_in(skeleton)
    assert done.returncode == 1
    text = done.stdout
    assert "2 failed, 7 errors" in text  # the nine conformance tests, collected and run
    assert "NotImplementedError: redis_streams: start" in text


def test_filled_in_the_skeleton_passes_the_conformance_suite(skeleton):
    module = skeleton / "fr_redis_streams" / "__init__.py"
    text = module.read_text()
    start, end = text.index("class RedisStreamsTransport:"), text.index("@hookimpl")
    module.write_text(text[:start] + FILLED.lstrip() + "\n\n" + text[end:])
    done = pytest_in(skeleton)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "9 passed" in done.stdout


def test_the_package_registers_its_transport_and_scheme(skeleton, fr_add_plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(skeleton))
    import fr_redis_streams

    registry = fr_add_plugin(fr_redis_streams, "fr_redis_streams")
    reg = registry.get(ComponentKind.TRANSPORT, "redis_streams")
    assert reg.url_schemes == {"rediss": True} and reg.config_model.__name__ == "RedisStreamsConfig"
    cfg = config_from_mapping(
        {"device_id": "cam-1", "broker_url": "rediss://cache.example:6380"}, env={}
    )
    validate_components(cfg, registry)
    sys.modules.pop("fr_redis_streams", None)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Redis", "lowercase letters"),
        ("class", "lowercase letters"),
        ("9x", "lowercase letters"),
        ("mqtt", "a package fr_mqtt is already installed"),  # would shadow fr-edge's own
    ],
)
def test_bad_names_and_existing_folders_are_refused(tmp_path, name, message):
    out = CliRunner().invoke(main, ["plugin", "new", "transport", name, "--dir", str(tmp_path)])
    assert out.exit_code != 0 and message in out.output
    args = ["plugin", "new", "transport", "ok_name", "--dir", str(tmp_path)]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "already exists: not overwritten" in again.output


def test_fr_edge_s_own_schemes_are_refused(tmp_path):
    args = ["plugin", "new", "transport", "webhook", "--scheme", "https", "--dir", str(tmp_path)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code != 0 and "URL scheme 'https' is fr-edge's own" in out.output
