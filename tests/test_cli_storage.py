"""`fr-edge status` and `fr-edge sync` against real database files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import fr_core.app.cli
from fr_core import DatabaseManager, hookimpl
from fr_core.app.cli import main
from fr_core.plugins import build_registry
from fr_core.testing.syncsource import LoopbackTransport, MemoryBroker

BROKER = MemoryBroker()


class MemoryTransportPlugin:
    @hookimpl
    def fr_register_transports(self, register):
        register("loopback", lambda cfg, ctx: LoopbackTransport(BROKER))


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.setattr(
        fr_core.app.cli,
        "build_registry",
        lambda: build_registry(extra_plugins=[("loopback", MemoryTransportPlugin())]),
    )
    BROKER.__init__()
    rng = np.random.default_rng(0)
    for i in range(1200):
        BROKER.enrol(f"EMP-{i:04d}", rng.standard_normal(128).astype(np.float32))
    cfg = tmp_path / "device.yaml"
    cfg.write_text(
        f"device_id: cam-001\nbroker_url: https://broker.example\n"
        f"db_path: {tmp_path}/faces.db\ntransport: loopback\n"
    )

    def run(*args):
        return CliRunner().invoke(main, [*args, "--config", str(cfg)])

    run.db_path = str(tmp_path / "faces.db")
    return run


def test_status_before_any_database(cli):
    result = cli("status")
    assert result.exit_code == 1
    assert "no database at" in result.output and "created by `fr-edge sync`" in result.output


def test_sync_then_status(cli):
    result = cli("sync", "--progress")
    assert result.exit_code == 0, result.output
    assert "sync (snapshot): version 0 -> 1200, 1200 upserts" in result.output
    assert "100%" in result.output  # the progress bar ran to the end
    BROKER.remove("EMP-0001")
    result = cli("sync", "--no-progress")
    assert "sync (incremental): version 1200 -> 1201, 0 upserts, 1 deletions" in result.output
    with DatabaseManager(cli.db_path) as db:
        db.outbox_append({"event_id": "EV1-1795800000000-abcdef", "event_type": "facial_id"})
    out = cli("status")
    assert out.exit_code == 0
    assert "enrolments: 1199 (SFace: 1199)" in out.output
    assert "sync: version 1201, last success" in out.output and "s ago" in out.output
    assert "outbox: 1 events" in out.output
    data = json.loads(cli("status", "--json").output)
    assert data["enrollments"] == {"SFace": 1199} and data["sync"]["version"] == 1201
    assert data["outbox"]["depth"] == 1 and data["outbox"]["oldest_event_age_seconds"] < 60


def test_a_failed_sync_exits_1_and_is_recorded(cli):
    BROKER.fail_next = [ConnectionRefusedError("connection refused")]
    result = cli("sync")
    assert result.exit_code == 1
    assert "error: sync failed: ConnectionRefusedError: connection refused" in result.output
    data = json.loads(cli("status", "--json").output)
    assert "connection refused" in data["sync"]["last_error"]


def test_sync_needs_a_transport(tmp_path):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"device_id: cam-001\nbroker_url: https://b.example\ndb_path: {tmp_path}/f.db\n")
    result = CliRunner().invoke(main, ["sync", "--config", str(cfg)])
    assert result.exit_code == 2 and "no transport configured" in result.output
