"""The fr-edge command line: help, exit codes, one-line errors, log formats, demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fr_core.app.cli import main

from .conftest import REPO

FR_EDGE = str(Path(sys.executable).with_name("fr-edge"))


def run(*args, env=None, timeout=60):
    return subprocess.run(
        [FR_EDGE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def invoke(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


@pytest.mark.parametrize(
    "cmd", [[], ["plugins"], ["config"], ["config", "check"], ["config", "schema"], ["demo"]]
)
def test_every_command_explains_itself(cmd):
    result = invoke(*cmd, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output and len(result.output.splitlines()) > 4


def test_console_script_version_and_help():
    out = run("--version")
    assert out.returncode == 0 and "fr-edge, version" in out.stdout
    out = run("--help")
    for command in ("plugins", "config", "demo"):
        assert command in out.stdout


def test_plugins_lists_components_distributions_and_errors(fake_distribution):
    fake_distribution("fake_broken", "raise ImportError('libnvinfer.so.10: cannot open')")
    result = invoke("plugins")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert any(line.split()[:3] == ["camera", "sim", "fr_hal_sim"] for line in lines)
    assert any("jsonl" in line and "fr-edge-example-transport 1.0.0" in line for line in lines)
    assert (
        "plugin fake_broken (fake_broken 0.0.1) failed to load: ImportError: "
        "libnvinfer.so.10: cannot open" in result.output
    )
    assert "Traceback" not in result.output
    assert "Traceback (most recent call last)" in invoke("--debug", "plugins").output


def test_plugins_json_and_disabled():
    result = invoke("plugins", "--json", env={"FR_DISABLED_PLUGINS": "example_transport"})
    data = json.loads(result.output)
    names = {(c["kind"], c["name"]) for c in data["components"]}
    assert ("camera", "sim") in names and ("transport", "jsonl") not in names
    assert data["disabled"] == ["example_transport"]


def test_config_check_valid_file():
    result = invoke("config", "check", str(REPO / "config_example.json"))
    assert result.exit_code == 0
    assert "config_example.json: valid" in result.output


def test_config_check_invalid_file_exit_2_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "device_id: cam-1\nbroker_url: https://b\nconsistency_threshold: 2\n"
        "api_key: sup3r-s3cret\ncamera: {plugin: sim, fps: fast}\n"
    )
    out = run("config", "check", str(bad))
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: {bad}: 1 invalid setting(s):\n")
    assert "consistency_threshold: Input should be less than or equal to 1 (got 2)" in out.stderr
    assert "Traceback" not in out.stderr and "sup3r" not in out.stderr + out.stdout
    bad.write_text("device_id: cam-1\nbroker_url: https://b\ncamera: {plugin: sim, fps: fast}\n")
    out = run("config", "check", str(bad))
    assert out.returncode == 2 and "camera.fps: Input should be a valid number" in out.stderr


def test_missing_file_is_one_line():
    out = run("config", "check", "/nonexistent/config.yaml")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: config file /nonexistent/config.yaml does not exist"


def test_usage_errors_exit_2():
    assert invoke("frobnicate").exit_code == 2
    assert invoke("demo", "--frames", "0").exit_code == 2


def test_runtime_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    out = run("demo", "--enrol", f"EMP-1={junk}", "--workdir", str(tmp_path / "w"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"error: {junk}: not an image OpenCV can read"]
    out = run("--debug", "demo", "--enrol", f"EMP-1={junk}", "--workdir", str(tmp_path / "w"))
    assert out.returncode == 1 and "Traceback (most recent call last)" in out.stderr


def test_json_log_lines(tmp_path):
    out = run(
        "--log-format",
        "json",
        "--log-level",
        "info",
        "demo",
        "--frames",
        "20",
        "--workdir",
        str(tmp_path / "w"),
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("engine started" in r["message"] for r in records)


def test_demo_runs_the_whole_loop(tmp_path):
    out = run("demo", "--frames", "40", "--workdir", str(tmp_path / "w"))
    assert out.returncode == 0, out.stderr
    assert "enrolled EMP-0001 from astronaut.png at the broker" in out.stdout
    assert re.search(r"broker received facial_id EV1-\d{13}-[0-9a-f]{6}: EMP-0001", out.stdout)
    frames = int(re.search(r"summary: (\d+) frames", out.stdout).group(1))
    assert 20 <= frames <= 40  # a real-time camera: a busy machine drops a few


def test_demo_stops_cleanly_on_sigterm(fr_data, tmp_path):
    clip = fr_data / "faces" / "short_hamilton_clip.mp4"
    photo = fr_data / "faces" / "lin-manuel-miranda.png"
    proc = subprocess.Popen(
        [
            FR_EDGE,
            "demo",
            "--source",
            str(clip),
            "--enrol",
            f"EMP-LMM={photo}",
            "--workdir",
            str(tmp_path / "w"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:  # wait until the device runs
        if line.startswith("device "):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "summary:" in out
