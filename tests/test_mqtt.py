"""The mqtt transport with a real mosquitto: TLS, passwords, client certificates, Last Will,
3.1.1 fallback, change notifications, and mosquitto SIGKILLed mid-stream."""

from __future__ import annotations

import json
import ssl
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from fr_core import (
    DatabaseManager,
    FacialIdEvent,
    SyncManagerFactory,
    TransportAuthError,
    TransportTLSError,
)
from fr_core.broker import MqttBroker
from fr_core.broker.certs import CertificateAuthority
from fr_core.broker.mosquitto import BRIDGE_USER, Mosquitto, mosquitto_binary
from fr_core.delivery.outbox import OutboxWorker
from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry
from fr_core.testing import require, wait_for

KEY = "mqtt-device-key-123456"
REGISTRY = build_registry()


@pytest.fixture
def broker(tmp_path):
    require(mosquitto_binary(), "mosquitto is not installed (apt-get install mosquitto)")
    with MqttBroker(tmp_path / "mqtt", {"cam-001": KEY}) as b:
        yield b


def transport(broker, **overrides):
    return REGISTRY.create(
        ComponentKind.TRANSPORT,
        "mqtt",
        {
            "broker_url": broker.url,
            "device_id": "cam-001",
            "api_key": KEY,
            "ca_bundle": str(broker.ca_path),
            "connect_timeout": 5,
            "publish_timeout": 5,
            "sync_timeout": 10,
            **overrides,
        },
    )


def events(n, start=0):
    return [
        FacialIdEvent.create(
            device_id="cam-001", user_id=f"EMP-{i}", distance=0.3, frames_tracked=5
        ).to_dict()
        for i in range(start, start + n)
    ]


def watcher(broker, topic):
    """A bridge-user client recording what arrives on ``topic`` (retained messages too)."""
    seen = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(broker.ca_path), cert_reqs=ssl.CERT_REQUIRED)
    c.username_pw_set(BRIDGE_USER, broker.bridge_password)
    c.on_connect = lambda cl, *_: cl.subscribe(topic, 1)
    c.on_message = lambda cl, u, msg: seen.append((msg.topic, json.loads(msg.payload), msg.retain))
    c.connect("127.0.0.1", broker.mosquitto.port)
    c.loop_start()
    return c, seen


def test_status_is_retained_and_the_last_will_says_offline(broker):
    t = transport(broker)
    t.start()
    c, seen = watcher(broker, "fr/v1/devices/cam-001/status")
    assert wait_for(lambda: any(p["state"] == "online" for _, p, _ in seen))
    t._client._sock.close()  # the device vanishes without a DISCONNECT
    assert wait_for(lambda: any(p.get("reason") == "lost" for _, p, _ in seen), timeout=90)
    c.loop_stop()
    t.stop()


def test_status_is_online_again_after_a_partition_and_a_broker_restart(broker):
    """Issue 12, item 4: "online" was published only from start(); after a blip paho
    reconnected and the retained Last Will ("lost") stayed."""
    topic = "fr/v1/devices/cam-001/status"
    t = transport(broker)
    t.start()
    c, seen = watcher(broker, topic)
    assert wait_for(lambda: any(p["state"] == "online" for _, p, _ in seen))
    t._client._sock.close()  # a partition: the link drops without a DISCONNECT
    assert wait_for(lambda: any(p.get("reason") == "lost" for _, p, _ in seen), timeout=90)
    lost_at = max(i for i, (_, p, _) in enumerate(seen) if p.get("reason") == "lost")
    assert wait_for(lambda: any(p["state"] == "online" for _, p, _ in seen[lost_at + 1 :]), 60)
    c.loop_stop()
    c.disconnect()
    broker.mosquitto.kill()  # the broker restarts: retained messages may be gone or old
    time.sleep(0.5)
    broker.mosquitto.start()
    restarted = time.time()

    def retained_online_after_restart():
        w, got = watcher(broker, topic)
        try:
            wait_for(lambda: got, timeout=3)
        finally:
            w.loop_stop()
            w.disconnect()
        if not got:
            return False
        _, payload, retained = got[-1]
        when = payload.get("timestamp", "")
        return retained and payload["state"] == "online" and when >= _iso(restarted)

    assert wait_for(retained_online_after_restart, timeout=60)
    t.stop()


def _iso(ts):
    import datetime

    return datetime.datetime.fromtimestamp(ts - 1, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )


def test_graceful_stop_publishes_offline(broker):
    t = transport(broker)
    t.start()
    t.stop()
    c, seen = watcher(broker, "fr/v1/devices/cam-001/status")
    assert wait_for(lambda: seen and seen[-1][1]["state"] == "offline" and seen[-1][2])
    c.loop_stop()


def test_mqtt_311_fallback_works_too(broker):
    t = transport(broker, protocol="3.1.1")
    t.start()
    assert t.protocol_used == "3.1.1"
    assert len(t.send_events(events(3)).acknowledged) == 3
    rng = np.random.default_rng(0)
    broker.store.enrol("EMP-1", rng.standard_normal(128).astype(np.float32))
    page = t.fetch_changes(0, 10)
    assert page["snapshot"] and page["upserts"][0]["user_id"] == "EMP-1"
    t.stop()
    assert wait_for(lambda: len(broker.store.ledger()) == 3)


def test_auto_protocol_prefers_mqtt5(broker):
    t = transport(broker)
    t.start()
    assert t.protocol_used == "5"
    t.stop()


def test_wrong_password_and_foreign_topics(broker):
    with pytest.raises(TransportAuthError, match="refused device 'cam-001'"):
        transport(broker, api_key="wrong-password-1").start()
    other = transport(broker, device_id="cam-002")  # a user that does not exist
    with pytest.raises(TransportAuthError):
        other.start()


def test_expired_server_certificate(tmp_path):
    require(mosquitto_binary(), "mosquitto is not installed")
    ca = CertificateAuthority(tmp_path / "pki")
    m = Mosquitto(tmp_path / "m", {"cam-001": KEY}, ca=ca)
    expired = ca.issue("expired", expired=True)
    m.server = expired
    m._write_config(False)
    with m:
        t = REGISTRY.create(
            ComponentKind.TRANSPORT,
            "mqtt",
            {
                "broker_url": m.url,
                "device_id": "cam-001",
                "api_key": KEY,
                "ca_bundle": str(ca.cert_path),
            },
        )
        with pytest.raises(TransportTLSError, match="certificate has expired"):
            t.start()


def test_client_certificate_authentication(tmp_path):
    require(mosquitto_binary(), "mosquitto is not installed")
    broker = MqttBroker(tmp_path / "mqtt", {"cam-001": KEY}, require_client_cert=True)
    ca = broker.mosquitto.ca
    cert = ca.issue("cam-001", client=True)  # the certificate's CN is the MQTT username
    broker.mosquitto.start()
    try:
        t = REGISTRY.create(
            ComponentKind.TRANSPORT,
            "mqtt",
            {
                "broker_url": broker.url,
                "device_id": "cam-001",
                "ca_bundle": str(ca.cert_path),
                "client_cert": str(cert.cert),
                "client_key": str(cert.key),
                "require_ack": False,  # mosquitto alone here (no bridge): PUBACK is the ack
            },
        )
        t.start()
        assert len(t.send_events(events(2)).acknowledged) == 2
        t.stop()
        anonymous = REGISTRY.create(
            ComponentKind.TRANSPORT,
            "mqtt",
            {
                "broker_url": broker.url,
                "device_id": "cam-001",
                "api_key": KEY,
                "ca_bundle": str(ca.cert_path),
                "connect_timeout": 3,
            },
        )
        with pytest.raises((TransportTLSError, TransportAuthError, Exception)):
            anonymous.start()
    finally:
        broker.mosquitto.stop()


def test_changes_notification_triggers_a_sync(broker, tmp_path):
    rng = np.random.default_rng(1)
    broker.store.enrol("EMP-1", rng.standard_normal(128).astype(np.float32))
    mgr, db, client = SyncManagerFactory.create(
        str(tmp_path / "d.db"),
        "cam-001",
        broker.url,
        api_key=KEY,
        ca_bundle=str(broker.ca_path),
        sync_timeout=10,
    )
    try:
        assert mgr.sync_now().ok and db.count_enrollments() == {"SFace": 1}
        broker.store.enrol("EMP-2", rng.standard_normal(128).astype(np.float32))
        broker.bridge.notify_changes("cam-001")  # no poll: the notification alone
        assert wait_for(lambda: db.get_enrollment("EMP-2") is not None, timeout=20)
    finally:
        client.stop()
        db.close()


def test_an_event_the_broker_refuses_stays_queued_and_the_rest_go(broker, tmp_path, caplog):
    """Over the real bridge: the broker's application refuses one event (user_id too long)
    and says so on events/ack; the pipelined drain delivers the others and keeps that one
    for a day instead of sending it again and again."""
    db = DatabaseManager(str(tmp_path / "o.db"))
    db.initialize()
    batch = events(6)
    batch[2] = {**batch[2], "user_id": "x" * 200}
    db.outbox_append_many(batch)
    t = transport(broker)
    t.start()
    try:
        worker = OutboxWorker(db, t, batch_size=2)
        assert worker.drain() == 5
    finally:
        t.stop()
    assert worker.rejected == 1 and db.outbox_stats().depth == 1
    assert db.outbox_claim() == []  # not due again before a day
    ledger = {e["event_id"] for e in broker.store.ledger()}
    assert ledger == {e["event_id"] for e in batch} - {batch[2]["event_id"]}
    assert f"broker rejected event {batch[2]['event_id']}" in caplog.text
    db.close()


def test_mosquitto_killed_mid_stream_loses_nothing(broker, tmp_path):
    db = DatabaseManager(str(tmp_path / "o.db"))
    db.initialize()
    t = transport(broker)
    worker = OutboxWorker(db, t, batch_size=20, backoff_min=0.05, backoff_max=0.5)
    committed: list[str] = []
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set() and i < 600:
            batch = events(10, i)
            db.outbox_append_many(batch)
            committed.extend(e["event_id"] for e in batch)
            worker.wake()
            i += 10
            time.sleep(0.01)

    producer = threading.Thread(target=produce)
    t.start()
    worker.start()
    producer.start()
    try:
        at_kill = []
        for _ in range(3):  # SIGKILL mosquitto mid-stream, then restart it
            assert wait_for(lambda: len(broker.store.ledger()) > 0)
            time.sleep(0.3)
            at_kill.append(len(broker.store.ledger()))
            broker.mosquitto.kill()
            time.sleep(0.5)
            broker.mosquitto.start()
        producer.join()
        assert wait_for(lambda: db.outbox_stats().depth == 0, timeout=60)
        assert wait_for(lambda: len(broker.store.ledger()) >= len(committed), timeout=30)
    finally:
        stop.set()
        worker.stop()
        t.stop()
    ledger = broker.store.ledger()
    ids = [e["event_id"] for e in ledger]
    assert len(ids) == len(set(ids))  # each event once in the ledger
    assert set(committed) <= set(ids)  # nothing committed was lost
    assert all(0 < n < len(committed) for n in at_kill)  # the kills came mid-stream
    db.close()


def test_a_device_starts_while_the_broker_is_down_and_delivers_later(tmp_path):
    """Offline at start is normal for a device: the client starts, queues, and delivers once
    the broker is reachable (it used to fail in start())."""
    from fr_core import IoTClient, IoTClientConfig

    require(mosquitto_binary(), "mosquitto is not installed (apt-get install mosquitto)")
    down = MqttBroker(tmp_path / "mqtt", {"cam-001": KEY})
    db = DatabaseManager(str(tmp_path / "dev.db"))
    client = IoTClient(
        IoTClientConfig(
            device_id="cam-001",
            broker_url=down.url,
            api_key=KEY,
            transport_options={"ca_bundle": str(down.ca_path), "connect_timeout": 3},
            backoff_min_seconds=0.1,
            backoff_max_seconds=0.5,
        ),
        db=db,
    )
    client.start()  # mosquitto is not running: no exception
    batch = events(20)
    db.outbox_append_many(batch)
    time.sleep(0.5)
    assert db.outbox_stats().depth == 20
    with down:
        assert wait_for(lambda: db.outbox_stats().depth == 0, timeout=30)
        assert {e["event_id"] for e in down.store.ledger()} == {e["event_id"] for e in batch}
    client.stop()
    db.close()


def test_acknowledgements_nobody_waits_for_are_not_kept(broker):
    """Issue 12, item 9: every events/ack message was stored in a map only the sender of
    those events emptied, so late, repeated or foreign acknowledgements grew it without
    bound."""
    t = transport(broker)
    t.start()
    try:
        result = t.send_events(events(30))
        assert len(result.acknowledged) == 30
        assert t._acks == {} and t._awaiting == set()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(broker.ca_path), cert_reqs=ssl.CERT_REQUIRED)
        c.username_pw_set(BRIDGE_USER, broker.bridge_password)
        c.connect("127.0.0.1", broker.mosquitto.port)
        c.loop_start()
        stray = {"accepted": [f"EV1-{i:013d}-abcdef" for i in range(2000)], "duplicates": []}
        info = c.publish("fr/v1/devices/cam-001/events/ack", json.dumps(stray), qos=1)
        info.wait_for_publish(10)
        later = t.send_events(events(5, start=100))  # the device goes on as before
        assert len(later.acknowledged) == 5
        assert t._acks == {} and t._awaiting == set()
        c.loop_stop()
        c.disconnect()
    finally:
        t.stop()
