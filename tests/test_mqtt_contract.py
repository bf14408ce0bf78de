"""Real MQTT traffic between the device and the bridge matches the topic table in
docs/mqtt.md: every topic, QoS, retain flag and payload."""

from __future__ import annotations

import json
import re
import ssl
import threading

import jsonschema
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from fr_core import DatabaseManager, FacialIdEvent, SyncManager
from fr_core.broker import MqttBroker
from fr_core.broker.mosquitto import BRIDGE_USER, mosquitto_binary
from fr_core.events import PresentationAttackEvent, event_json_schemas
from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry
from fr_core.testing import require, wait_for

from .conftest import REPO

KEY = "mqtt-contract-key-42"
PAYLOADS = json.loads((REPO / "docs" / "schemas" / "mqtt-payloads.json").read_text())["$defs"]


def topic_table():
    text = (REPO / "docs" / "mqtt.md").read_text()
    rows = re.findall(
        r"^\| `(fr/v1/[^`]+)` \| ([^|]+) \| (\d) \| (yes|no) \| (\w+) \|$", text, flags=re.M
    )
    assert len(rows) == 7
    table = []
    for topic, direction, qos, retained, payload in rows:
        pattern = "^" + re.escape(topic).replace(r"\{device_id\}", "[^/]+") + "$"
        table.append((re.compile(pattern), direction.strip(), int(qos), retained == "yes", payload))
    return table


def validate(payload_name, data):
    if payload_name == "event":
        schema = event_json_schemas()[data.get("event_type", "facial_id")]
    else:
        schema = PAYLOADS[payload_name]
    jsonschema.Draft202012Validator(schema).validate(data)


def test_traffic_matches_the_topic_table(tmp_path):
    require(mosquitto_binary(), "mosquitto is not installed (apt-get install mosquitto)")
    table = topic_table()
    with MqttBroker(tmp_path / "mqtt", {"cam-001": KEY}) as broker:
        seen = []
        spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        spy.tls_set(ca_certs=str(broker.ca_path), cert_reqs=ssl.CERT_REQUIRED)
        spy.username_pw_set(BRIDGE_USER, broker.bridge_password)
        subscribed = threading.Event()
        spy.on_connect = lambda cl, *_: cl.subscribe("fr/v1/#", 2)
        spy.on_subscribe = lambda *_: subscribed.set()
        spy.on_message = lambda cl, u, m: seen.append((m.topic, m.qos, m.retain, m.payload))
        spy.connect("127.0.0.1", broker.mosquitto.port)
        spy.loop_start()
        assert subscribed.wait(10)  # the spy listens before the device speaks
        rng = np.random.default_rng(0)
        for i in range(7):
            broker.store.enrol(f"EMP-{i}", rng.standard_normal(128).astype(np.float32))
        t = build_registry().create(
            ComponentKind.TRANSPORT,
            "mqtt",
            {
                "broker_url": broker.url,
                "device_id": "cam-001",
                "api_key": KEY,
                "ca_bundle": str(broker.ca_path),
            },
        )
        t.start()
        ev = FacialIdEvent.create(
            device_id="cam-001", user_id="EMP-1", distance=0.3, frames_tracked=5
        ).to_dict()
        attack = PresentationAttackEvent.create(
            device_id="cam-001",
            claimed_user_id="EMP-2",
            liveness_score=0.12,
            threshold=0.6,
            frames=5,
        ).to_dict()
        t.send_events([ev, attack])
        t.send_heartbeat({"device_id": "cam-001", "fps": 8.0})
        with DatabaseManager(str(tmp_path / "d.db")) as db:
            assert SyncManager(db, t, page_size=3).sync_now().ok
        broker.bridge.notify_changes("cam-001")
        t.stop()
        assert wait_for(lambda: any(s[0].endswith("/status") and b"offline" in s[3] for s in seen))
        spy.loop_stop()
        # both event types reached the broker's ledger through the bridge
        types = [e["event_type"] for e in broker.store.ledger()]
        assert types == ["facial_id", "presentation_attack"]
    kinds = set()
    for topic, qos, retained, payload in seen:
        matches = [row for row in table if row[0].match(topic)]
        assert matches, f"{topic} is not in the topic table"
        _, _, table_qos, table_retained, name = matches[0]
        assert qos == table_qos, (topic, qos)
        if not table_retained:
            assert not retained, topic
        validate(name, json.loads(payload))
        kinds.add(name)
    assert kinds == {
        "event",
        "events_ack",
        "heartbeat",
        "status",
        "sync_request",
        "sync_response",
        "changes",
    }


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_schemas_are_valid(name):
    jsonschema.Draft202012Validator.check_schema(PAYLOADS[name])
