"""The https transport and the outbox worker against the reference broker over real TLS."""

from __future__ import annotations

import json
import logging
import socket
import time

import numpy as np
import pytest

from fr_core import (
    ConfigError,
    DatabaseManager,
    FacialIdEvent,
    SyncManager,
    TransportAuthError,
    TransportProtocolError,
    TransportTLSError,
    TransportUnavailable,
)
from fr_core.broker import ReferenceBroker
from fr_core.broker.certs import CertificateAuthority
from fr_core.delivery.outbox import OutboxWorker
from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry
from fr_core.testing import wait_for

KEY = "k3y-never-to-be-seen-0123"
REGISTRY = build_registry()


@pytest.fixture
def broker(tmp_path):
    with ReferenceBroker(tmp_path / "broker", api_key=KEY) as b:
        yield b


def transport(broker, **overrides):
    options = {
        "broker_url": broker.url,
        "device_id": "cam-001",
        "api_key": KEY,
        "ca_bundle": str(broker.ca_path),
        "backoff_base": 0.05,
        **overrides,
    }
    t = REGISTRY.create(ComponentKind.TRANSPORT, "https", options)
    t.start()
    return t


def events(n, start=0):
    return [
        FacialIdEvent.create(
            device_id="cam-001", user_id=f"EMP-{i}", distance=0.3, frames_tracked=5
        ).to_dict()
        for i in range(start, start + n)
    ]


def test_batches_are_delivered_and_acknowledged(broker):
    t = transport(broker, batch_size=7)
    batch = events(20)
    result = t.send_events(batch)
    assert list(result.acknowledged) == [e["event_id"] for e in batch]
    assert [e["event_id"] for e in broker.store.ledger()] == [e["event_id"] for e in batch]
    again = t.send_events(batch[:3])  # idempotent: duplicates are acknowledged, not stored
    assert len(again.acknowledged) == 3 and len(broker.store.ledger()) == 20
    assert broker.store.ledger()[0]["deliveries"] == 2


def test_invalid_events_are_reported_per_event(broker):
    t = transport(broker)
    good = events(1)[0]
    bad = {**events(1, 1)[0], "confidence": 3.0}
    other = {**events(1, 2)[0], "device_id": "cam-999"}
    result = t.send_events([good, bad, other])
    assert list(result.acknowledged) == [good["event_id"]]
    assert "confidence" in result.rejected[bad["event_id"]]
    assert "does not match" in result.rejected[other["event_id"]]


def test_heartbeat_and_sync(broker, tmp_path):
    t = transport(broker)
    t.send_heartbeat({"device_id": "cam-001", "fps": 12.5})
    assert broker.store.heartbeats() == [{"device_id": "cam-001", "fps": 12.5}]
    rng = np.random.default_rng(0)
    for i in range(30):
        broker.store.enrol(f"EMP-{i}", rng.standard_normal(128).astype(np.float32))
    with DatabaseManager(str(tmp_path / "d.db")) as db:
        mgr = SyncManager(db, t, page_size=8)
        assert mgr.sync_now().ok and db.count_enrollments() == {"SFace": 30}
        broker.store.remove("EMP-2")
        broker.store.enrol("EMP-99", rng.standard_normal(128).astype(np.float32))
        r = mgr.sync_now()
        assert r.ok and (r.upserts, r.deletions) == (1, 1)
        broker.store.compact()
        broker.store.remove("EMP-5")
        assert mgr.sync_now().ok  # incremental still possible: nothing it needs was dropped
        assert set(db.get_all_enrollments()) == set(broker.store.live())


def test_retries_honour_retry_after(broker):
    t = transport(broker)
    broker.faults.add(status=429, retry_after=1)
    broker.faults.add(status=503)
    t0 = time.monotonic()
    assert len(t.send_events(events(1)).acknowledged) == 1
    assert time.monotonic() - t0 >= 0.9  # it waited as the broker asked
    assert broker.faults.applied == 2


def test_persistent_failure_is_unavailable_with_the_hint(broker):
    t = transport(broker, max_retries=1)
    broker.faults.add(status=429, retry_after=2, count=2)
    with pytest.raises(TransportUnavailable, match="HTTP 429") as exc:
        t.send_events(events(1))
    assert exc.value.retry_after == 2


def test_wrong_api_key_is_a_clear_auth_error(broker, caplog):
    caplog.set_level(logging.DEBUG)
    t = transport(broker, api_key="wrong-key-4567")
    with pytest.raises(
        TransportAuthError,
        match=r"refused the credentials of device 'cam-001' "
        r"\(HTTP 401",
    ):
        t.send_events(events(1))
    with pytest.raises(TransportAuthError):
        t.fetch_changes(0, 10)


def test_wrong_ca_is_a_clear_tls_error(broker, tmp_path):
    other = CertificateAuthority(tmp_path / "other")
    t = transport(broker, ca_bundle=str(other.cert_path))
    with pytest.raises(TransportTLSError, match="certificate verify failed"):
        t.send_events(events(1))


def test_expired_certificate_is_a_clear_tls_error(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    old = ca.issue("server", expired=True)
    with ReferenceBroker(tmp_path / "b", api_key=KEY, certfile=old.cert, keyfile=old.key) as b:
        t = transport(b, ca_bundle=str(ca.cert_path))
        with pytest.raises(TransportTLSError, match="certificate has expired"):
            t.send_events(events(1))


def test_wrong_host_name_is_a_tls_error(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    cert = ca.issue("server", hosts=("broker.example.com",))
    with ReferenceBroker(tmp_path / "b", api_key=KEY, certfile=cert.cert, keyfile=cert.key) as b:
        t = transport(b, ca_bundle=str(ca.cert_path))
        with pytest.raises(TransportTLSError):
            t.send_events(events(1))


def test_client_certificates(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("server")
    client = ca.issue("cam-001", client=True)
    with ReferenceBroker(
        tmp_path / "b",
        api_key=KEY,
        certfile=server.cert,
        keyfile=server.key,
        client_ca=ca.cert_path,
    ) as b:
        ok = transport(
            b, ca_bundle=str(ca.cert_path), client_cert=str(client.cert), client_key=str(client.key)
        )
        assert len(ok.send_events(events(1)).acknowledged) == 1
        anonymous = transport(b, ca_bundle=str(ca.cert_path), max_retries=0)
        with pytest.raises((TransportTLSError, TransportUnavailable)):
            anonymous.send_events(events(1, 1))


def test_broker_down_is_unavailable(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = REGISTRY.create(
        ComponentKind.TRANSPORT,
        "https",
        {
            "broker_url": f"https://127.0.0.1:{port}",
            "device_id": "cam-001",
            "api_key": KEY,
            "max_retries": 1,
            "backoff_base": 0.01,
        },
    )
    with pytest.raises(TransportUnavailable, match="unreachable"):
        t.send_events(events(1))


def test_http_is_refused_without_the_explicit_option(broker):
    with pytest.raises(ConfigError, match="refuses http://"):
        REGISTRY.create(
            ComponentKind.TRANSPORT,
            "https",
            {"broker_url": "http://127.0.0.1:1", "device_id": "cam-001"},
        )
    t = REGISTRY.create(
        ComponentKind.TRANSPORT,
        "https",
        {
            "broker_url": "http://127.0.0.1:1",
            "device_id": "cam-001",
            "allow_insecure": True,
            "max_retries": 0,
        },
    )
    with pytest.raises(TransportUnavailable):
        t.send_events(events(1))


def test_redirects_are_not_followed(tmp_path):
    import http.server
    import threading

    seen_auth = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen_auth.append(self.headers.get("Authorization"))
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:9/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        t = REGISTRY.create(
            ComponentKind.TRANSPORT,
            "https",
            {
                "broker_url": f"http://127.0.0.1:{srv.server_address[1]}",
                "device_id": "cam-001",
                "api_key": KEY,
                "allow_insecure": True,
            },
        )
        with pytest.raises(TransportProtocolError, match="redirects are not followed"):
            t.send_events(events(1))
        assert len(seen_auth) == 1  # one request, never a second to the new place
    finally:
        srv.shutdown()


def test_the_api_key_never_shows(broker, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    messages = []
    for t in (
        transport(broker, api_key="wrong-key-4567"),
        transport(broker, ca_bundle=str(CertificateAuthority(tmp_path / "o").cert_path)),
    ):
        try:
            t.send_events(events(1))
        except Exception as exc:
            messages.append(str(exc) + repr(exc))
    ok = transport(broker)
    ok.send_events(events(1))
    text = caplog.text + "".join(messages)
    assert KEY not in text and "wrong-key-4567" not in text
    assert messages and all("Bearer" not in m for m in messages)


# --- the outbox worker over https -----------------------------------------------------------


def test_worker_drains_in_order_through_faults(broker, tmp_path):
    db = DatabaseManager(str(tmp_path / "o.db"))
    db.initialize()
    batch = events(60)
    for e in batch:
        db.outbox_append(e)
    t = transport(broker, max_retries=0, batch_size=10)
    worker = OutboxWorker(db, t, batch_size=10, backoff_min=0.05, backoff_max=0.2)
    broker.faults.add(status=503, count=2)
    broker.faults.add(status=429, retry_after=1)
    broker.faults.add(drop=True)
    broker.faults.add(delay=0.5)
    worker.start()
    try:
        assert wait_for(lambda: db.outbox_stats().depth == 0)
    finally:
        worker.stop()
    ids = [e["event_id"] for e in broker.store.ledger()]
    assert ids == [e["event_id"] for e in batch]  # every event, once, in order
    assert worker.failed_sends >= 4 and worker.stats()["queued"] == 0
    db.close()


def test_worker_backs_off_while_the_broker_is_down_and_recovers(tmp_path):
    db = DatabaseManager(str(tmp_path / "o.db"))
    db.initialize()
    ref = ReferenceBroker(tmp_path / "b", api_key=KEY).start()
    port = ref.port
    ref.stop()  # down
    for e in events(5):
        db.outbox_append(e)
    t = REGISTRY.create(
        ComponentKind.TRANSPORT,
        "https",
        {
            "broker_url": f"https://127.0.0.1:{port}",
            "device_id": "cam-001",
            "api_key": KEY,
            "ca_bundle": str(ref.ca_path),
            "max_retries": 0,
        },
    )
    worker = OutboxWorker(db, t, backoff_min=0.05, backoff_max=0.3)
    worker.start()
    try:
        assert wait_for(lambda: worker.failed_sends >= 3)
        assert worker.stats()["queued"] == 5 and "unreachable" in worker.stats()["last_error"]
        back = ReferenceBroker(tmp_path / "b", api_key=KEY, port=port).start()  # same CA
        try:
            assert wait_for(lambda: db.outbox_stats().depth == 0)
            assert len(back.store.ledger()) == 5
        finally:
            back.stop()
    finally:
        worker.stop()
        db.close()


def test_rejected_events_stay_queued_and_are_reported(broker, tmp_path, caplog):
    db = DatabaseManager(str(tmp_path / "o.db"))
    db.initialize()
    good, bad = events(2)
    bad = {**bad, "user_id": "x" * 200}  # too long for the broker
    db.outbox_append_many([good, bad])
    worker = OutboxWorker(db, transport(broker))
    assert worker.drain_once() == 1
    assert worker.rejected == 1 and db.outbox_stats().depth == 1
    assert db.outbox_claim() == []  # not due again before a day
    assert f"broker rejected event {bad['event_id']}" in caplog.text
    db.close()


def test_a_stopped_client_makes_no_new_transport(tmp_path):
    """Issue 12, item 9: IoTClient.stop() and the sync thread raced; a fetch_changes after
    stop built a new transport (a connection and its threads) that nobody stopped."""
    import threading

    from fr_core import DatabaseManager, IoTClient, IoTClientConfig
    from fr_core.broker import ReferenceBroker
    from fr_core.errors import TransportUnavailable

    key = "client-race-key-9911"
    with ReferenceBroker(tmp_path / "b", api_key=key) as ref:
        client = IoTClient(
            IoTClientConfig(
                device_id="cam-1",
                broker_url=ref.url,
                api_key=key,
                transport_options={"ca_bundle": str(ref.ca_path)},
            ),
            db=DatabaseManager(str(tmp_path / "c.db")),
        )
        client.start()
        assert json.loads(client.fetch_changes(0))["latest_version"] == 0
        errors, made = [], []

        def sync_thread():
            for _ in range(50):
                try:
                    client.fetch_changes(0)
                except TransportUnavailable as exc:
                    errors.append(exc)
                    return
                made.append(client.transport)

        t = threading.Thread(target=sync_thread)
        t.start()
        client.stop()
        t.join(10)
        assert client.transport is None  # nothing rebuilt behind stop's back
        with pytest.raises(TransportUnavailable, match="stopped"):
            client.fetch_changes(0)
        client.start()  # and it can start again
        assert json.loads(client.fetch_changes(0))["latest_version"] == 0
        client.stop()
