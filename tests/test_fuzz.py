"""Fuzzing what comes from outside (issue 6, item 3): MQTT payloads on the device's topics
and HTTP responses of the broker. Sync pages, config files and images given to
compress_image_for_event are fuzzed beside their code (test_sync, test_config,
test_imaging). `make fuzz` runs all of them with 10,000 examples each (profile "long").

The rules: nothing crashes (every rejection is a TransportError or SyncError, logged),
nothing is half-written (the database is unchanged by a bad answer), and the transport
still works afterwards."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from fr_mqtt import topics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fr_core import DatabaseManager, FacialIdEvent, SyncManager
from fr_core.broker import MqttBroker
from fr_core.broker.mosquitto import BRIDGE_USER, mosquitto_binary
from fr_core.errors import TransportError
from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry
from fr_core.testing import require

KEY = "fuzz-device-key-0123456"
REGISTRY = build_registry()

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)


def shaped_like_answers():
    """Dicts with the keys the device reads, holding anything."""
    keys = [
        "accepted",
        "duplicates",
        "rejected",
        "request_id",
        "from_version",
        "to_version",
        "latest_version",
        "more",
        "upserts",
        "deletions",
        "cursor",
        "snapshot",
        "error",
    ]
    return st.dictionaries(st.sampled_from(keys), json_values, max_size=8)


payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped_like_answers().map(lambda v: json.dumps(v).encode()),
    st.integers(200, 5000).map(lambda n: b"[" * n + b"]" * n),  # nesting deeper than json likes
    st.integers(1, 3).map(lambda n: b"\xff\xfe" * n),
)


@dataclass
class Msg:
    topic: str
    payload: bytes


# --- MQTT: the transport's message handler ------------------------------------------------------


@pytest.fixture(scope="module")
def mqtt_transport():
    return REGISTRY.create(
        ComponentKind.TRANSPORT,
        "mqtt",
        {"broker_url": "mqtts://127.0.0.1:1", "device_id": "cam-001", "api_key": KEY},
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(["events_ack", "sync_response", "changes", "status"]), payloads)
def test_any_mqtt_payload_on_any_device_topic_is_handled(mqtt_transport, which, payload):
    calls = []
    mqtt_transport.on_changes = lambda: calls.append(1)
    mqtt_transport._on_message(None, None, Msg(topics("cam-001")[which], payload))
    # acknowledgements are recorded only as ids: strings, nothing else
    assert all(isinstance(k, str) for k in mqtt_transport._acks)
    assert all(v is None or isinstance(v, str) for v in mqtt_transport._acks.values())


def test_hostile_payloads_through_a_real_mosquitto_leave_the_transport_working(tmp_path):
    require(mosquitto_binary(), "mosquitto is not installed (apt-get install mosquitto)")
    hostile = [
        b"",
        b"\xff\xfe\x00",
        b"{",
        b"[]",
        b"null",
        b"1e999",
        b"[" * 50_000 + b"]" * 50_000,
        json.dumps({"accepted": "not-a-list"}).encode(),
        json.dumps({"accepted": [1, {"x": 2}], "rejected": ["list"]}).encode(),
        json.dumps({"request_id": ["x"], "upserts": "all"}).encode(),
        b"x" * 200_000,
    ]
    with MqttBroker(tmp_path / "mqtt", {"cam-001": KEY}) as broker:
        t = REGISTRY.create(
            ComponentKind.TRANSPORT,
            "mqtt",
            {
                "broker_url": broker.url,
                "device_id": "cam-001",
                "api_key": KEY,
                "ca_bundle": str(broker.ca_path),
                "publish_timeout": 10,
                "ack_timeout": 10,
            },
        )
        t.start()
        try:
            attacker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            attacker.tls_set(ca_certs=str(broker.ca_path), cert_reqs=ssl.CERT_REQUIRED)
            attacker.username_pw_set(BRIDGE_USER, broker.bridge_password)
            attacker.connect("127.0.0.1", broker.mosquitto.port)
            attacker.loop_start()
            names = topics("cam-001")
            infos = [
                attacker.publish(names[w], p, qos=1)
                for p in hostile
                for w in ("events_ack", "sync_response", "changes")
            ]
            for info in infos:
                info.wait_for_publish(10)
            attacker.disconnect()
            attacker.loop_stop()
            # still connected, still delivering and acknowledged
            events = [
                FacialIdEvent.create(
                    device_id="cam-001", user_id=f"EMP-{i}", distance=0.3, frames_tracked=5
                ).to_dict()
                for i in range(5)
            ]
            result = t.send_events(events)
            assert sorted(result.acknowledged) == sorted(e["event_id"] for e in events)
        finally:
            t.stop()


# --- HTTPS: whatever the broker answers ---------------------------------------------------------


class Scripted(BaseHTTPRequestHandler):
    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")

    def _go(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body = type(self).answer
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _go

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def scripted_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def https_transport(scripted_server):
    # plain HTTP on loopback (allow_insecure): what is fuzzed is the parsing, not TLS
    t = REGISTRY.create(
        ComponentKind.TRANSPORT,
        "https",
        {
            "broker_url": scripted_server,
            "device_id": "cam-001",
            "api_key": KEY,
            "allow_insecure": True,
            "max_retries": 0,
            "read_timeout": 5,
        },
    )
    t.start()
    yield t
    t.stop()


statuses = st.sampled_from(
    [200, 201, 204, 301, 302, 400, 401, 403, 404, 409, 413, 429, 500, 502, 503]
)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "Content-Type", "Location"]),
    st.one_of(st.text(alphabet="0123456789 -abc:/.", max_size=12), st.just("120")),
    max_size=2,
)
bodies = st.one_of(
    payloads,
    shaped_like_answers().map(lambda v: json.dumps(v).encode()),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(statuses, headers, bodies)
def test_any_answer_to_a_batch_of_events_is_a_result_or_a_transport_error(
    https_transport, status, hdrs, body
):
    Scripted.answer = (status, hdrs, body)
    events = [
        FacialIdEvent.create(
            device_id="cam-001", user_id="EMP-1", distance=0.3, frames_tracked=5
        ).to_dict()
    ]
    try:
        result = https_transport.send_events(events)
    except TransportError:
        return
    # accepted only what was sent, and only ids
    assert set(result.acknowledged) <= {events[0]["event_id"]}
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.rejected.items())


@pytest.fixture(scope="module")
def synced_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzzdb") / "faces.db"
    db = DatabaseManager(str(path))
    db.initialize()
    db.upsert_enrollment("EMP-1", np.ones(128, np.float32), "SFace")
    yield db
    db.close()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(statuses, bodies)
def test_any_answer_to_a_sync_writes_nothing_or_a_valid_page(
    caplog, https_transport, synced_db, status, body
):
    Scripted.answer = (status, {"Content-Type": "application/json"}, body)
    before = (synced_db.get_sync_state().version, synced_db.count_enrollments())
    with caplog.at_level(logging.ERROR):
        result = SyncManager(synced_db, https_transport, models={"SFace": 128}).sync_now()
    after = (synced_db.get_sync_state().version, synced_db.count_enrollments())
    if not result.ok:
        assert after == before  # nothing half-written
        assert result.error  # and said why
    assert synced_db.integrity_check() == "ok"
