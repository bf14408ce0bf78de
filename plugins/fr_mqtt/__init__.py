"""Transport plugin ``mqtt``: the broker contract over MQTT with paho-mqtt 2.x (docs/mqtt.md).

MQTT 5 with a 3.1.1 fallback; TLS always verified; username/password (password = the API
key) or a client certificate; QoS 1 with a persistent session; a retained online/offline
status with a Last Will; heartbeats; sync as request/response with correlation; and the
broker's "changes available" notification handed to a callback (``on_changes``), which the
SyncManagerFactory wires to ``SyncManager.notify_changes``. An event counts as delivered only
when the broker's PUBACK for it has arrived.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from fr_core import hookimpl
from fr_core.delivery.transports import BrokerConnectionConfig, events_answer
from fr_core.errors import (
    ConfigError,
    TransportAuthError,
    TransportProtocolError,
    TransportTLSError,
    TransportUnavailable,
)
from fr_core.events import format_timestamp, utc_now
from fr_core.interfaces import SendResult
from fr_core.logsetup import register_secret
from fr_core.storage import wire_json

log = logging.getLogger(__name__)
PREFIX = "fr/v1/devices"


#: Largest acknowledgement or sync answer accepted (a page of 1,000 512-d embeddings is
#: about 3 MB of JSON).
MAX_ANSWER_BYTES = 16 * 1024 * 1024


def topics(device_id: str) -> dict[str, str]:
    base = f"{PREFIX}/{device_id}"
    return {
        "events": f"{base}/events",
        "events_ack": f"{base}/events/ack",
        "heartbeat": f"{base}/heartbeat",
        "status": f"{base}/status",
        "sync_request": f"{base}/sync/request",
        "sync_response": f"{base}/sync/response",
        "changes": f"{base}/changes",
    }


class MqttTransportConfig(BrokerConnectionConfig):
    """Connection fields from BrokerConnectionConfig (broker_url is mqtts://host:port, the
    api_key is the MQTT password), plus these."""

    username: str | None = Field(None, description="default: the device_id")
    protocol: Literal["auto", "5", "3.1.1"] = Field("auto", description="MQTT version")
    keepalive: int = Field(30, ge=5, le=3600, description="seconds")
    session_expiry: int = Field(86400, ge=0, description="seconds the broker keeps the session")
    connect_timeout: float = Field(10.0, gt=0, le=120)
    publish_timeout: float = Field(30.0, gt=0, le=600, description="wait for PUBACKs")
    sync_timeout: float = Field(30.0, gt=0, le=600, description="wait for a sync answer")
    require_ack: bool = Field(
        True,
        description="delete an event only when the broker's application confirms it "
        "stored it (the events/ack topic), not merely on the MQTT broker's PUBACK: a broker "
        "that crashes after its PUBACK then loses nothing. False: PUBACK alone",
    )
    ack_timeout: float = Field(30.0, gt=0, le=600, description="wait for events/ack")


class MqttTransport:
    def __init__(
        self,
        config: MqttTransportConfig,
        device_id: str,
        broker_url: str,
        password: str | None,
        allow_insecure: bool,
    ) -> None:
        parts = urlsplit(broker_url)
        if parts.scheme not in ("mqtts", "mqtt") or not parts.hostname:
            raise ConfigError(
                f"the mqtt transport needs an mqtts:// broker URL, got {broker_url!r}"
            )
        if parts.scheme == "mqtt" and not allow_insecure:
            raise ConfigError(
                "the mqtt transport refuses mqtt:// (no TLS); use mqtts://, or "
                "set allow_insecure: true (tests on loopback only)"
            )
        self.config = config
        self.device_id = device_id
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.tls = parts.scheme == "mqtts"
        self.topics = topics(device_id)
        self._password = password
        register_secret(password)
        self.on_changes: Callable[[], Any] | None = None
        self._client: Any = None
        self._connected = threading.Event()
        self._connack: Any = None
        self._pending: dict[str, tuple[threading.Event, list[Any]]] = {}
        self._lock = threading.Lock()
        self._acks: dict[str, str | None] = {}  # event_id -> None (stored) or rejection reason
        # only the acknowledgements of events a send is waiting for are kept: one that comes
        # late, twice or for an event never sent is dropped, so _acks stays bounded by the
        # events on the wire (it grew without bound before issue 12)
        self._awaiting: set[str] = set()
        self._ack_cond = threading.Condition()
        self.protocol_used: str | None = None

    # --- connection ---

    def _make_client(self, v5: bool) -> Any:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"fr-edge-{self.device_id}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
        )
        if self.tls:
            client.tls_set(
                ca_certs=str(self.config.ca_bundle) if self.config.ca_bundle else None,
                certfile=str(self.config.client_cert) if self.config.client_cert else None,
                keyfile=str(self.config.client_key) if self.config.client_key else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        username = self.config.username or self.device_id
        if self.config.client_cert is None or self._password:
            client.username_pw_set(username, self._password)
        offline = json.dumps({"state": "offline", "reason": "lost"})
        client.will_set(self.topics["status"], offline, qos=1, retain=True)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 30)
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.config.session_expiry
        self._connect_props = props
        return client

    def start(self) -> None:
        if self._client is not None:
            return
        order = {"auto": [True, False], "5": [True], "3.1.1": [False]}[self.config.protocol]
        last: Exception | None = None
        for v5 in order:
            try:
                self._connect(v5)
                self.protocol_used = "5" if v5 else "3.1.1"
                break
            except _Unsupported as exc:
                last = exc
                continue
        else:
            raise TransportProtocolError(f"broker {self.host} refused MQTT: {last}")

    def _announce_online(self, client: Any) -> None:
        """The retained status "online": on every (re)connect, since the broker published
        the Last Will ("offline", "lost") when the link dropped, and after a broker restart
        the retained status may be gone or stale."""
        client.publish(
            self.topics["status"],
            json.dumps({"state": "online", "timestamp": format_timestamp(utc_now())}),
            qos=1,
            retain=True,
        )

    def _connect(self, v5: bool) -> None:
        client = self._make_client(v5)
        self._connected.clear()
        self._connack = None
        try:
            if v5:
                client.connect(
                    self.host,
                    self.port,
                    self.config.keepalive,
                    clean_start=False,
                    properties=self._connect_props,
                )
            else:
                client.connect(self.host, self.port, self.config.keepalive)
        except ssl.SSLError as exc:
            why = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            raise TransportTLSError(
                f"TLS with {self.host} failed: {why} (check ca_bundle and "
                "the broker's certificate and its validity dates)"
            ) from None
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise TransportUnavailable(
                f"MQTT broker {self.host}:{self.port} unreachable: {exc}"
            ) from None
        client.loop_start()
        if not self._connected.wait(self.config.connect_timeout) and self._connack is None:
            client.loop_stop()
            client.disconnect()
            raise TransportUnavailable(
                f"no CONNACK from {self.host} within {self.config.connect_timeout}s"
            )
        rc = self._connack
        if rc is not None and rc.is_failure:
            client.loop_stop()
            client.disconnect()
            name = str(rc)
            if "protocol version" in name.lower():
                raise _Unsupported(name)
            if any(
                w in name.lower()
                for w in ("password", "authori", "not authorized", "bad user", "banned")
            ):
                raise TransportAuthError(
                    f"MQTT broker {self.host} refused device {self.device_id!r}: {name}"
                )
            raise TransportUnavailable(f"MQTT broker {self.host} refused the connection: {name}")
        self._client = client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connack = rc
        if not rc.is_failure:
            client.subscribe(
                [
                    (self.topics["sync_response"], 1),
                    (self.topics["changes"], 1),
                    (self.topics["events_ack"], 1),
                ]
            )
            self._announce_online(client)
            self._connected.set()
        else:
            self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.clear()
        if rc is not None and getattr(rc, "value", 0) != 0:
            log.warning("MQTT connection to %s lost (%s); reconnecting", self.host, rc)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        # paho runs this on its network thread: an exception here would end the thread and
        # with it the connection, so nothing a broker sends may escape.
        try:
            self._handle(msg)
        except Exception:
            log.exception("message on %s could not be handled; ignored", msg.topic)

    @staticmethod
    def _json(msg: Any, what: str) -> Any:
        """The payload as JSON, or None (logged) when it is too large, not UTF-8, not JSON,
        or nested deeper than the parser allows."""
        if len(msg.payload) > MAX_ANSWER_BYTES:
            log.error(
                "%s on %s is %d bytes (at most %d); ignored",
                what,
                msg.topic,
                len(msg.payload),
                MAX_ANSWER_BYTES,
            )
            return None
        try:
            return json.loads(msg.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            log.error("malformed %s on %s ignored", what, msg.topic)
            return None

    def _handle(self, msg: Any) -> None:
        if msg.topic == self.topics["events_ack"]:
            ack = self._json(msg, "events acknowledgement")
            if ack is None:
                return
            try:
                stored, rejected = events_answer(ack)
            except ValueError as exc:
                log.error("malformed events acknowledgement ignored: %s", exc)
                return
            with self._ack_cond:
                for eid in stored:
                    if eid in self._awaiting:
                        self._acks[eid] = None
                for eid, reason in rejected.items():
                    if eid in self._awaiting:
                        self._acks[eid] = reason
                self._ack_cond.notify_all()
            return
        if msg.topic == self.topics["changes"]:
            if self.on_changes is not None:
                try:
                    self.on_changes()
                except Exception:
                    log.exception("changes-available callback failed")
            return
        if msg.topic == self.topics["sync_response"]:
            answer = self._json(msg, "sync answer")
            if not isinstance(answer, dict):
                if answer is not None:
                    log.error("malformed sync answer on %s ignored", msg.topic)
                return
            rid = answer.get("request_id")
            with self._lock:
                waiter = self._pending.get(str(rid))
            if waiter is not None:
                waiter[1].append(answer)
                waiter[0].set()

    def stop(self, timeout: float = 5.0) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            info = client.publish(
                self.topics["status"],
                json.dumps(
                    {
                        "state": "offline",
                        "reason": "stopped",
                        "timestamp": format_timestamp(utc_now()),
                    }
                ),
                qos=1,
                retain=True,
            )
            info.wait_for_publish(min(timeout, 2.0))
        except (RuntimeError, ValueError):
            pass
        client.disconnect()
        client.loop_stop()

    # --- calls ---

    def _need(self) -> Any:
        if self._client is None:
            self.start()
        if not self._connected.wait(self.config.connect_timeout):
            raise TransportUnavailable(f"MQTT broker {self.host}:{self.port} not connected")
        return self._client

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> SendResult:
        return self.send_events_async(events).result()

    @property
    def max_send_seconds(self) -> float:
        """The longest a batch waits: its PUBACKs, then (require_ack) the application's
        acknowledgement (the outbox sizes its leases from it)."""
        c = self.config
        return c.publish_timeout + (c.ack_timeout if c.require_ack else 0.0)

    def send_events_async(self, events: Sequence[Mapping[str, Any]]) -> _Pending:
        """Publish now; ``result()`` waits for the PUBACKs. Lets the outbox worker prepare
        the next batch while this one is on the wire."""
        client = self._need()
        if self.config.require_ack:  # before publishing: the answer may beat us back
            with self._ack_cond:
                self._awaiting.update(str(e["event_id"]) for e in events)
        infos = []
        try:
            for e in events:
                infos.append(
                    (str(e["event_id"]), client.publish(self.topics["events"], wire_json(e), qos=1))
                )
        except BaseException:
            self._forget([str(e["event_id"]) for e in events])
            raise
        return _Pending(
            infos, self.config.publish_timeout, self.host, self if self.config.require_ack else None
        )

    def _forget(self, ids: Sequence[str]) -> None:
        """A send is done with ``ids``: their acknowledgements are no longer wanted."""
        with self._ack_cond:
            self._awaiting.difference_update(ids)
            for i in ids:
                self._acks.pop(i, None)

    def _wait_acks(self, ids: list[str], deadline: float) -> tuple[list[str], dict[str, str]]:
        """The application acknowledgements of ``ids`` that arrive before ``deadline``."""
        with self._ack_cond:
            while not all(i in self._acks for i in ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ack_cond.wait(left)
            got = {i: self._acks.pop(i) for i in ids if i in self._acks}
        stored = [i for i in ids if i in got and got[i] is None]
        rejected = {i: r for i, r in got.items() if r is not None}
        return stored, rejected

    def send_heartbeat(self, payload: Mapping[str, Any]) -> None:
        client = self._need()
        info = client.publish(self.topics["heartbeat"], json.dumps(dict(payload)), qos=1)
        info.wait_for_publish(self.config.publish_timeout)
        if not info.is_published():
            raise TransportUnavailable(f"heartbeat not acknowledged by {self.host}")

    def fetch_changes(
        self, since_version: int, limit: int, cursor: str | None = None
    ) -> Mapping[str, Any]:
        client = self._need()
        rid = uuid.uuid4().hex
        done: tuple[threading.Event, list[Any]] = (threading.Event(), [])
        with self._lock:
            self._pending[rid] = done
        try:
            request = {
                "request_id": rid,
                "since_version": since_version,
                "limit": limit,
                "cursor": cursor,
                "response_topic": self.topics["sync_response"],
            }
            props = None
            if self.protocol_used == "5":
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = self.topics["sync_response"]
                props.CorrelationData = rid.encode()
            client.publish(
                self.topics["sync_request"], json.dumps(request), qos=1, properties=props
            )
            if not done[0].wait(self.config.sync_timeout):
                raise TransportUnavailable(
                    f"no sync answer from {self.host} within {self.config.sync_timeout}s"
                )
        finally:
            with self._lock:
                self._pending.pop(rid, None)
        answer = done[1][0]
        if "error" in answer:
            raise TransportProtocolError(f"broker refused the sync request: {answer['error']}")
        page = answer.get("page")
        if not isinstance(page, dict):
            raise TransportProtocolError("sync answer without a page")
        return page


class _Unsupported(Exception):
    pass


class _Pending:
    def __init__(
        self,
        infos: list[tuple[str, Any]],
        timeout: float,
        host: str,
        acks: MqttTransport | None = None,
    ) -> None:
        self.infos, self.timeout, self.host, self.acks = infos, timeout, host, acks

    def result(self) -> SendResult:
        """Events whose PUBACK arrived, in order, stopping at the first that did not; with
        ``require_ack``, only those the broker's application also confirmed."""
        try:
            return self._result()
        finally:
            if self.acks is not None:
                self.acks._forget([eid for eid, _ in self.infos])

    def _result(self) -> SendResult:
        deadline = time.monotonic() + self.timeout
        acked = []
        for eid, info in self.infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                break
            if not info.is_published():
                break
            acked.append(eid)  # PUBACK received: the broker has it
        if not acked and self.infos:
            raise TransportUnavailable(f"no PUBACK from {self.host} within {self.timeout}s")
        if self.acks is None:
            return SendResult(acknowledged=acked)
        stored, rejected = self.acks._wait_acks(
            acked, time.monotonic() + self.acks.config.ack_timeout
        )
        if not stored and not rejected and acked:
            raise TransportUnavailable(
                f"{self.host} took the events (PUBACK) but its application confirmed none "
                f"within {self.acks.config.ack_timeout}s"
            )
        return SendResult(acknowledged=stored, rejected=rejected)


@hookimpl
def fr_register_transports(register: Any) -> None:
    def factory(cfg: MqttTransportConfig, ctx: Any) -> MqttTransport:
        t = cfg.target(ctx, "mqtt")
        return MqttTransport(cfg, t.device_id, t.broker_url, t.api_key, t.allow_insecure)

    register(
        "mqtt",
        factory,
        MqttTransportConfig,
        url_schemes={"mqtts": True, "mqtt": False},
        description="MQTT 5/3.1.1 (paho): QoS 1 events, heartbeats, sync request/response",
    )
