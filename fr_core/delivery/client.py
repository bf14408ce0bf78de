"""IoTClient and IoTClientConfig (README "IoT Client").

The client owns the device's link to the broker: a transport plugin chosen by the broker URL's
scheme (``https`` -> ``https``, ``mqtts`` -> ``mqtt``) or by name, the durable outbox in the
device database, and the worker that drains it::

    client = IoTClient(IoTClientConfig(device_id="cam-001",
                                       broker_url="https://iot-broker.example.com",
                                       api_key="..."))
    client.start()
    client.send_event(event, image=frame, face_bbox=[x, y, w, h])   # queued, durable
    client.send_event_sync(event)                                    # now, or raises
    page = client.request_sync(since_version=100)
    client.stop()
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from fr_core.config import API_KEY_ENV
from fr_core.delivery.eventhooks import run_event_hooks
from fr_core.delivery.imaging import compress_image_for_event
from fr_core.delivery.outbox import OutboxWorker
from fr_core.errors import FrEdgeError, TransportProtocolError, TransportUnavailable
from fr_core.events import AnyEvent, parse_event
from fr_core.interfaces import ComponentKind
from fr_core.logsetup import register_secret
from fr_core.plugins import build_registry
from fr_core.storage import DatabaseManager
from fr_core.syncpage import ChangesPage, parse_page

log = logging.getLogger(__name__)

SCHEME_TRANSPORTS = {"https": "https", "http": "https", "mqtts": "mqtt", "mqtt": "mqtt"}


class IoTClientConfig(BaseModel):
    """Settings of an :class:`IoTClient`; the README's three are enough for most uses."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    broker_url: str
    api_key: SecretStr | None = Field(None, description=f"default: ${API_KEY_ENV}")
    transport: str | None = Field(None, description="transport plugin; default: by URL scheme")
    transport_options: dict[str, Any] = Field(default_factory=dict)
    allow_insecure: bool = False
    db_path: str = "fr-edge-data/faces.db"
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the sqlite storage's options, e.g. where the device key comes from",
    )
    dev_mode: bool = False
    image_target_kb: float = Field(50.0, ge=2)
    batch_size: int = Field(100, ge=1, le=500)
    backoff_min_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(300.0, gt=0)
    stop_timeout_seconds: float = Field(5.0, gt=0, le=120)

    def api_key_value(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return os.environ.get(API_KEY_ENV) or None


class _ConnectsWhenReachable:
    """A transport that may start while its broker is unreachable.

    A device must come up and queue events while offline: if ``start`` cannot reach the
    broker, that is logged and every later call (send, heartbeat, sync) tries to connect
    first, failing with TransportUnavailable until it can, which the outbox worker meets with
    its backoff. Errors that retrying cannot mend (TLS, authentication, bad config) are
    raised from ``start`` as before. Everything else is the wrapped transport's.
    """

    _CALLS = ("send_events", "send_events_async", "send_heartbeat", "fetch_changes")

    def __init__(self, transport: Any) -> None:
        self._inner = transport
        self._started = False
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if self._started:
            return
        with self._lock:
            if not self._started:
                self._inner.start()
                self._started = True
                log.info("broker reachable: connected")

    def start(self) -> None:
        try:
            self._ensure()
        except TransportUnavailable as exc:
            log.warning(
                "broker unreachable at start (%s); events are queued and sent once it is", exc
            )

    def stop(self, timeout: float = 5.0) -> None:
        if self._started:
            self._inner.stop(timeout)
            self._started = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in self._CALLS and callable(attr):

            def call(*args: Any, **kwargs: Any) -> Any:
                self._ensure()
                return attr(*args, **kwargs)

            return call
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_inner", "_started", "_lock"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)


class IoTClient:
    def __init__(
        self, config: IoTClientConfig, *, db: DatabaseManager | None = None, registry: Any = None
    ) -> None:
        self.config = config
        self.registry = registry or build_registry()
        self.db = db or DatabaseManager(
            config.db_path,
            dev_mode=config.dev_mode,
            registry=self.registry,
            storage_options=config.storage_options,
        )
        self._own_db = db is None
        self.transport: Any = None
        # stop() and a sync thread calling fetch_changes could race: the sync recreated a
        # transport (a connection, threads) after stop had closed the old one
        self._lock = threading.RLock()
        self._stopped = False
        self.worker: OutboxWorker | None = None
        self._started = False
        #: Called when the broker announces enrolment changes (MQTT "changes available");
        #: SyncManagerFactory sets it to the SyncManager's notify_changes.
        self.on_changes: Any = None
        register_secret(config.api_key_value())

    # --- lifecycle ---

    def _transport(self) -> Any:
        with self._lock:
            if self._stopped:
                raise TransportUnavailable("the IoT client is stopped; start() it again first")
            return self._make_transport()

    def _make_transport(self) -> Any:
        if self.transport is None:
            scheme = self.config.broker_url.split("://", 1)[0].lower()
            owner = self.registry.scheme_transport(scheme)
            name = (
                self.config.transport
                or SCHEME_TRANSPORTS.get(scheme)
                or (owner[0] if owner is not None else scheme)
            )
            options: dict[str, Any] = {
                "device_id": self.config.device_id,
                "broker_url": self.config.broker_url,
                "allow_insecure": self.config.allow_insecure,
                **self.config.transport_options,
            }
            key = self.config.api_key_value()
            if key is not None:
                options["api_key"] = key
            self.transport = self.registry.create(
                ComponentKind.TRANSPORT, name, options, path="transport"
            )
            if hasattr(self.transport, "on_changes"):
                self.transport.on_changes = self._changes_available
            self.transport = _ConnectsWhenReachable(self.transport)
            self.transport.start()
        return self.transport

    def start(self) -> None:
        """Open the database and the transport and start draining the outbox."""
        if self._started:
            return
        with self._lock:
            self._stopped = False
        self.db.initialize()
        self.worker = OutboxWorker(
            self.db,
            self._transport(),
            batch_size=self.config.batch_size,
            backoff_min=self.config.backoff_min_seconds,
            backoff_max=self.config.backoff_max_seconds,
        )
        self.worker.start()
        self._started = True

    def stop(self, timeout: float | None = None) -> None:
        """Stop within ``timeout`` (default ``stop_timeout_seconds``). Every event queued is
        already on disk; one in flight stays queued and goes again on the next start."""
        limit = timeout if timeout is not None else self.config.stop_timeout_seconds
        with self._lock:
            self._stopped = True  # from now on no call makes a new transport
        if self.worker is not None:
            self.worker.stop(limit)
        with self._lock:
            transport, self.transport = self.transport, None
        if transport is not None:
            transport.stop(min(limit, 2.0))
        if self._own_db and self._started:
            self.db.close()
        self._started = False

    def __enter__(self) -> IoTClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _changes_available(self) -> None:
        log.info("broker announced enrolment changes")
        if self.on_changes is not None:
            self.on_changes()

    # --- events ---

    def _prepare(
        self, event: Any, image: np.ndarray | None, face_bbox: Sequence[float] | None
    ) -> AnyEvent | None:
        ev = parse_event(dict(event) if isinstance(event, Mapping) else event.to_dict())
        if ev.device_id != self.config.device_id:
            raise ValueError(
                f"event device_id {ev.device_id!r} is not this client's {self.config.device_id!r}"
            )
        if image is not None:
            ev.image = compress_image_for_event(image, self.config.image_target_kb, face_bbox)

        return run_event_hooks(self.registry.pm, ev)[0]

    def send_event(
        self, event: Any, image: np.ndarray | None = None, face_bbox: Sequence[float] | None = None
    ) -> str | None:
        """Queue an event (durably) for delivery; returns its event_id, or None if a plugin
        vetoed it. ``image`` is the frame; with ``face_bbox`` the face is cropped from it."""
        if not self._started:
            raise FrEdgeError("IoTClient is not started: call start() first")
        ev = self._prepare(event, image, face_bbox)
        if ev is None:
            return None
        self.db.outbox_append(ev.to_dict())
        assert self.worker is not None
        self.worker.wake()
        return ev.event_id

    def send_event_sync(
        self, event: Any, image: np.ndarray | None = None, face_bbox: Sequence[float] | None = None
    ) -> bool:
        """Send one event now, bypassing the outbox. True when the broker acknowledged it;
        raises a TransportError otherwise (the event is then not stored anywhere)."""
        ev = self._prepare(event, image, face_bbox)
        if ev is None:
            return False
        result = self._transport().send_events([ev.to_dict()])
        if ev.event_id in set(result.acknowledged):
            return True
        reason = dict(result.rejected).get(ev.event_id, "not acknowledged")
        raise TransportProtocolError(f"broker did not accept event {ev.event_id}: {reason}")

    # --- sync ---

    def fetch_changes(self, since_version: int, limit: int = 500, cursor: str | None = None) -> Any:
        """The transport's raw page (a SyncManager source)."""
        return self._transport().fetch_changes(since_version, limit, cursor)

    def request_sync(
        self, since_version: int = 0, limit: int = 500, cursor: str | None = None
    ) -> ChangesPage:
        """One validated page of enrolment changes after ``since_version``."""
        return parse_page(self.fetch_changes(since_version, limit, cursor))

    def stats(self) -> dict[str, Any]:
        return self.worker.stats() if self.worker else {}
