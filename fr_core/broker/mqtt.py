"""The MQTT side of the reference broker: a bridge that serves the topic contract
(docs/mqtt.md) through a running mosquitto and keeps the same ledger as the HTTPS side.

It connects as the bridge user with a persistent session (events published while it is away
are queued by mosquitto), stores events (deduplicated by event_id) and heartbeats in a
:class:`BrokerStore`, answers sync requests, and publishes "changes available"
notifications.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from fr_core.broker.mosquitto import BRIDGE_USER, Mosquitto
from fr_core.broker.store import BrokerStore

log = logging.getLogger(__name__)
PREFIX = "fr/v1/devices"


class MqttBridge:
    def __init__(
        self,
        store: BrokerStore,
        host: str,
        port: int,
        password: str,
        ca: Path,
        username: str = BRIDGE_USER,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.store = store
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="fr-bridge", protocol=mqtt.MQTTv5
        )
        self.client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.host, self.port = host, port
        self.ready = threading.Event()

    def start(self, timeout: float = 10.0) -> MqttBridge:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(self.host, self.port, 30, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.ready.wait(timeout):
            raise RuntimeError("the MQTT bridge could not connect to mosquitto")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.error("bridge refused by mosquitto: %s", rc)
            return
        client.subscribe(
            [
                (f"{PREFIX}/+/events", 1),
                (f"{PREFIX}/+/heartbeat", 1),
                (f"{PREFIX}/+/sync/request", 1),
            ]
        )
        self.ready.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 5:
            return
        device, kind = parts[3], "/".join(parts[4:])
        try:
            body = json.loads(msg.payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.error("bridge: malformed payload on %s dropped", msg.topic)
            return
        if kind == "events":
            batch = body["events"] if isinstance(body, dict) and "events" in body else [body]
            result = self.store.record_events(device, batch)
            if result["rejected"]:
                log.error("bridge: rejected events from %s: %s", device, result["rejected"])
            # stored (or refused) for good: tell the device it may delete them
            client.publish(f"{PREFIX}/{device}/events/ack", json.dumps(result), qos=1)
        elif kind == "heartbeat" and isinstance(body, dict):
            self.store.record_heartbeat(device, body)
        elif kind == "sync/request" and isinstance(body, dict):
            self._answer_sync(client, device, body, msg)

    def _answer_sync(self, client: Any, device: str, body: dict[str, Any], msg: Any) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        rid = body.get("request_id")
        topic = (
            getattr(msg.properties, "ResponseTopic", None)
            or body.get("response_topic")
            or f"{PREFIX}/{device}/sync/response"
        )
        if not str(topic).startswith(f"{PREFIX}/{device}/"):
            log.error("bridge: %s asked for an answer on a foreign topic", device)
            return
        try:
            page = self.store.changes_page(
                int(body.get("since_version", 0)),
                max(1, min(5000, int(body.get("limit", 500)))),
                body.get("cursor"),
            )
            answer: dict[str, Any] = {"request_id": rid, "page": page}
        except (LookupError, ValueError, TypeError) as exc:
            answer = {"request_id": rid, "error": {"code": "bad_request", "message": str(exc)}}
        props = Properties(PacketTypes.PUBLISH)
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr:
            props.CorrelationData = corr
        client.publish(topic, json.dumps(answer), qos=1, properties=props)

    def notify_changes(self, device: str) -> None:
        self.client.publish(
            f"{PREFIX}/{device}/changes",
            json.dumps({"latest_version": self.store.version()}),
            qos=1,
        )


class MqttBroker:
    """mosquitto + the bridge + a BrokerStore: the MQTT broker side for tests, with the
    surface the conformance suite expects (``store``, ``inject_failures``)."""

    def __init__(
        self, folder: Path, devices: dict[str, str], *, require_client_cert: bool = False
    ) -> None:
        self.bridge_password = "bridge-" + str(abs(hash(folder)))[:12]
        self.mosquitto = Mosquitto(
            folder / "mosquitto",
            {**devices, BRIDGE_USER: self.bridge_password},
            require_client_cert=require_client_cert,
        )
        self.store = BrokerStore(folder / "broker.db")
        self.bridge: MqttBridge | None = None

    @property
    def url(self) -> str:
        return self.mosquitto.url

    @property
    def ca_path(self) -> Path:
        return self.mosquitto.ca.cert_path

    def start(self) -> MqttBroker:
        self.mosquitto.start()
        self.bridge = MqttBridge(
            self.store, "127.0.0.1", self.mosquitto.port, self.bridge_password, self.ca_path
        ).start()
        return self

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        self.mosquitto.stop()

    def restart(self) -> None:
        """mosquitto stopped cleanly and started again on the same port (its persistence and
        the store kept), the bridge reconnected: the conformance suite's broker restart."""
        if self.bridge is not None:
            self.bridge.stop()
        self.mosquitto.stop()
        self.start()

    def inject_failures(self, count: int) -> None:
        """The broker goes away for a moment (mosquitto killed, restarted ~0.3 s x count
        later): the conformance suite's generic failure."""
        self.mosquitto.kill()

        def back() -> None:
            time.sleep(0.3 * count)
            self.mosquitto.start()

        threading.Thread(target=back, daemon=True).start()

    def __enter__(self) -> MqttBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
