"""`fr-edge broker`: serve over TLS in a real process, enrol, remove, list, compact."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from fr_core import DatabaseManager, IoTClient, IoTClientConfig, SyncManager
from fr_core.app.cli import main

from .conftest import REPO

FR_EDGE = str(Path(sys.executable).with_name("fr-edge"))


def cli(*args):
    return CliRunner().invoke(main, list(args))


def test_enrol_remove_compact(tmp_path):
    data = str(tmp_path / "b")
    np.save(tmp_path / "e.npy", np.random.default_rng(0).standard_normal(128).astype(np.float32))
    out = cli("broker", "enrol", "--data", data, "EMP-1", "--embedding", str(tmp_path / "e.npy"))
    assert out.exit_code == 0 and "enrolled EMP-1 (SFace, 128 values) as version 1" in out.output
    assert cli("broker", "remove", "--data", data, "EMP-1").output.startswith(
        "removed EMP-1 as version 2"
    )
    out = cli("broker", "remove", "--data", data, "EMP-1")
    assert out.exit_code == 1 and "EMP-1 is not enrolled" in out.output
    assert "compacted at version 2" in cli("broker", "compact", "--data", data).output


def test_bad_enrolments(tmp_path):
    data = str(tmp_path / "b")
    np.save(tmp_path / "z.npy", np.zeros(128, np.float32))
    out = cli("broker", "enrol", "--data", data, "EMP-1", "--embedding", str(tmp_path / "z.npy"))
    assert out.exit_code == 1 and "all zeros" in out.output
    assert cli("broker", "enrol", "--data", data, "EMP-1").exit_code == 2
    photo = tmp_path / "p.png"
    photo.write_bytes(b"not really")
    out = cli("broker", "enrol", "--data", data, "EMP-1", "--photo", str(photo))
    assert out.exit_code != 0 and (
        "unknown detector" in out.output
        or "exactly one" in out.output
        or "not an image" in out.output
    )


def test_serve_in_its_own_process(tmp_path):
    data = tmp_path / "b"
    rng = np.random.default_rng(1)
    for i in range(4):
        np.save(tmp_path / f"{i}.npy", rng.standard_normal(128).astype(np.float32))
        cli(
            "broker",
            "enrol",
            "--data",
            str(data),
            f"EMP-{i}",
            "--embedding",
            str(tmp_path / f"{i}.npy"),
        )
    env = {**os.environ, "FR_BROKER_API_KEY": "serve-key-9876", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [FR_EDGE, "broker", "serve", "--data", str(data), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        url = re.search(r"on (https://\S+)", proc.stdout.readline()).group(1)
        ca = re.search(r"trust (\S+)", proc.stdout.readline()).group(1)
        cfg = IoTClientConfig(
            device_id="cam-001",
            broker_url=url,
            api_key="serve-key-9876",
            transport_options={"ca_bundle": ca},
        )
        client = IoTClient(cfg, db=DatabaseManager(str(tmp_path / "d.db")))
        with DatabaseManager(str(tmp_path / "d.db")) as db:
            assert SyncManager(db, client).sync_now().ok
            assert db.count_enrollments() == {"SFace": 4}
        from fr_core import FacialIdEvent

        ev = FacialIdEvent.create(
            device_id="cam-001", user_id="EMP-2", distance=0.2, frames_tracked=6
        )
        assert client.send_event_sync(ev)
        client.stop()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "reference broker stopped" in out
    listed = json.loads(cli("broker", "events", "--data", str(data), "--json").output)
    assert [e["event_id"] for e in listed] == [ev.event_id]
    assert "1 events" in cli("broker", "events", "--data", str(data)).output


def test_serve_needs_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("FR_BROKER_API_KEY", raising=False)
    out = cli("broker", "serve", "--data", str(tmp_path / "b"))
    assert out.exit_code == 2 and "FR_BROKER_API_KEY" in out.output


def test_bridge_command_serves_mqtt_through_a_running_mosquitto(tmp_path):
    from fr_core import FacialIdEvent
    from fr_core.broker.mosquitto import BRIDGE_USER, Mosquitto, mosquitto_binary
    from fr_core.interfaces import ComponentKind
    from fr_core.plugins import build_registry
    from fr_core.testing import require, wait_for

    require(mosquitto_binary(), "mosquitto is not installed (apt-get install mosquitto)")
    data = tmp_path / "b"
    with Mosquitto(tmp_path / "m", {"cam-001": "dev-pass-1234", BRIDGE_USER: "bridge-pw-99"}) as m:
        env = {**os.environ, "FR_BRIDGE_PASSWORD": "bridge-pw-99", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [
                FR_EDGE,
                "broker",
                "bridge",
                "--data",
                str(data),
                "--mqtt-url",
                m.url,
                "--ca",
                str(m.ca.cert_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        try:
            assert proc.stdout.readline().startswith("bridge connected")
            t = build_registry().create(
                ComponentKind.TRANSPORT,
                "mqtt",
                {
                    "broker_url": m.url,
                    "device_id": "cam-001",
                    "api_key": "dev-pass-1234",
                    "ca_bundle": str(m.ca.cert_path),
                },
            )
            t.start()
            ev = FacialIdEvent.create(
                device_id="cam-001", user_id="EMP-5", distance=0.2, frames_tracked=5
            ).to_dict()
            assert t.send_events([ev]).acknowledged == [ev["event_id"]]
            t.stop()

            def listed():
                out = cli("broker", "events", "--data", str(data), "--json").output
                return [e["event_id"] for e in json.loads(out)]

            assert wait_for(lambda: listed() == [ev["event_id"]])
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "bridge stopped" in out
