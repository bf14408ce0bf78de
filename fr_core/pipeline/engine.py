"""The engine: builds the configured components and runs the frame loop.

This is the skeleton the vision pipeline grows on. It already owns what every stage needs:

* components built by name from the config through the plugin registry, each block validated
  by its plugin's model;
* the lifecycle hooks (``fr_engine_started``, ``fr_engine_stopping``) and the event hook
  (``fr_event_before_queue``: plugins enrich or veto each event before it is queued);
* a frame loop that reads the camera with a timeout, never queues frames (a slow stage makes
  the camera drop frames, which are counted), reopens a failed source with a capped backoff,
  and stops within a bounded time when :meth:`Engine.request_stop` is called;
* a camera watchdog: a source that delivers no frame for ``camera_watchdog_seconds`` (only
  timeouts) is closed and reopened, whatever its back-end;
* figures for heartbeats and the CLI (:class:`EngineStats`);
* one fault never ends the loop: a frame handler that raises is caught for that frame,
  counted by kind (``frame_errors``), logged rate-limited; an event the outbox cannot take
  now waits in memory and is retried (:class:`fr_core.pipeline.faults.EventSpool`), one its policy
  refuses is counted as dropped with the policy named.

Per-frame work is a list of :data:`FrameHandler` callables; the recognition stages (detector,
tracker, embedder, matcher, EventValidator) plug in there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from fr_core.config import AppConfig, validate_components
from fr_core.delivery.eventhooks import run_event_hooks
from fr_core.errors import FrEdgeError
from fr_core.events import AnyEvent
from fr_core.interfaces import ComponentKind, FrameResult, ReadStatus
from fr_core.pipeline.faults import EventSpool, RateLimitedLog
from fr_core.plugins import BuildContext, Registry

log = logging.getLogger(__name__)

Event = AnyEvent
FrameHandler = Callable[["Engine", FrameResult], None]
EventSink = Callable[[Event], None]


@dataclass
class EngineStats:
    frames: int = 0
    timeouts: int = 0
    camera_errors: int = 0
    camera_reopens: int = 0
    camera_stalls: int = 0
    camera_dropped: int = 0
    camera_plane_failures: dict[str, int] = field(default_factory=dict)  # IR/depth reads lost
    events_queued: int = 0
    events_vetoed: int = 0
    events_invalid: int = 0
    started_at: float = 0.0
    stopped_at: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean ms per frame handler
    frame_errors: dict[str, int] = field(default_factory=dict)  # "handler: Error" -> frames
    events_dropped: dict[str, int] = field(default_factory=dict)  # why -> events lost
    events_refused: dict[str, int] = field(default_factory=dict)  # why -> failed attempts
    events_pending: int = 0  # events waiting in memory for the outbox to work again

    @property
    def fps(self) -> float:
        end = self.stopped_at or time.monotonic()
        return self.frames / (end - self.started_at) if end > self.started_at else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fps"] = round(self.fps, 2)
        return d


class Engine:
    """Run with ``start()``, then ``run()`` (blocking) and ``stop()``; or as a context manager."""

    def __init__(
        self,
        config: AppConfig,
        registry: Registry,
        *,
        event_sink: EventSink | None = None,
        handlers: list[FrameHandler] | None = None,
        read_timeout: float = 1.0,
        max_reopen_backoff: float = 10.0,
    ) -> None:
        self.config = config
        self.registry = registry
        self.handlers: list[FrameHandler] = list(handlers or [])
        self.event_sink = event_sink
        self.read_timeout = read_timeout
        self.max_reopen_backoff = max_reopen_backoff
        self.stats = EngineStats()
        self.components: dict[str, Any] = {}
        # components running in place of the configured one: path -> configured, running, why
        self.fallbacks: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._started = False
        self._handler_time: dict[str, list[float]] = {}
        self._faults = RateLimitedLog(log)
        self.spool = (
            EventSpool(event_sink, self._faults, on_stored=self._stored)
            if event_sink is not None
            else None
        )
        # Validate every component block before building anything: all problems at once.
        self._options = validate_components(config, registry)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        ctx = BuildContext(registry=self.registry, app_config=self.config)
        try:
            for path, kind, block in self.config.components():
                self.components[path] = self._create(ctx, path, kind, block)
            self.camera.open()
        except BaseException:
            self._close_components()
            raise
        self._started = True
        self.stats.started_at = time.monotonic()
        self.registry.pm.hook.fr_engine_started(engine=self)
        log.info(
            "engine started: %s",
            ", ".join(
                f"{p}={self.fallbacks[p]['running'] if p in self.fallbacks else b.plugin}"
                for p, _, b in self.config.components()
            ),
        )

    def _create(self, ctx: BuildContext, path: str, kind: ComponentKind, block: Any) -> Any:
        """Build one component; if it cannot start and its block names a ``fallback``, build
        that instead (logged) and keep it in :attr:`fallbacks` (heartbeats, metrics)."""
        component, fallback = self.registry.create_block(
            kind,
            block,
            ctx,
            path=path,
            options=self._options[path],
            fallback_options=self._options.get(f"{path}.fallback"),
        )
        if fallback is not None:
            self.fallbacks[path] = fallback
        return component

    @property
    def camera(self) -> Any:
        return self.components["camera"]

    def component(self, kind: ComponentKind) -> Any | None:
        for path, k, _ in self.config.components():
            if k is kind:
                return self.components.get(path)
        return None

    def request_stop(self) -> None:
        """Ask the loop to stop; safe from signal handlers and other threads."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._stop.set()
        try:
            self.registry.pm.hook.fr_engine_stopping(engine=self)
        finally:
            if self.spool is not None:
                self.spool.close()
                self.refresh_stats()
            self._close_components()
            self.stats.stopped_at = time.monotonic()
            log.info("engine stopped: %s", self.stats.as_dict())

    def _close_components(self) -> None:
        for path, comp in reversed(list(self.components.items())):
            close = getattr(comp, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:
                    log.warning("closing %s failed: %s", path, exc)
        self.components.clear()

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- frame loop ---------------------------------------------------------------------

    def run(self, max_frames: int | None = None, max_seconds: float | None = None) -> EngineStats:
        """Process frames until EOS, ``request_stop()``, ``max_frames`` or ``max_seconds``."""
        if not self._started:
            raise FrEdgeError("engine is not started: call start() first")
        deadline = time.monotonic() + max_seconds if max_seconds else None
        backoff = 0.5
        watchdog = self.config.camera_watchdog_seconds
        last_frame = time.monotonic()
        while not self._stop.is_set():
            if max_frames is not None and self.stats.frames >= max_frames:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            result = self.camera.read(self.read_timeout)
            if result.status is ReadStatus.FRAME:
                backoff = 0.5
                last_frame = time.monotonic()
                self.stats.frames += 1
                self._handle(result)
                if self.stats.frames == 1:
                    log.info(
                        "first frame processed %.2fs after the engine started",
                        time.monotonic() - self.stats.started_at,
                    )
            elif result.status is ReadStatus.TIMEOUT:
                self.stats.timeouts += 1
                silent = time.monotonic() - last_frame
                if watchdog and silent >= watchdog:
                    self.stats.camera_stalls += 1
                    log.warning("camera delivered no frame for %.1fs; reopening it", silent)
                    self._reopen_camera()
                    last_frame = time.monotonic()
            elif result.status is ReadStatus.EOS:
                log.info("camera reached the end of its stream")
                break
            else:
                self.stats.camera_errors += 1
                log.warning("camera error: %s; reopening in %.1fs", result.error, backoff)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.max_reopen_backoff)
                self._reopen_camera()
        self.refresh_stats()
        return self.stats

    def refresh_stats(self) -> EngineStats:
        """Bring the figures gathered elsewhere (camera drops, stage times) up to date; safe
        to call from another thread while the loop runs (heartbeats, metrics)."""
        camera = self.components.get("camera")
        if camera is not None:
            self.stats.camera_dropped = int(getattr(camera, "dropped", 0))
            failures = getattr(camera, "plane_failures", None)
            if isinstance(failures, dict):
                self.stats.camera_plane_failures = {str(k): int(v) for k, v in failures.items()}
        self.stats.stage_ms = {
            name: round(1000 * sum(v) / len(v), 3)
            for name, v in list(self._handler_time.items())
            if v
        }
        if self.spool is not None:
            self.stats.events_dropped = dict(self.spool.dropped)
            self.stats.events_refused = dict(self.spool.refused)
            self.stats.events_pending = self.spool.pending
        return self.stats

    def _reopen_camera(self) -> None:
        try:
            self.camera.close()
            self.camera.open()
            self.stats.camera_reopens += 1
        except Exception as exc:
            log.warning("camera reopen failed: %s", exc)

    def _handle(self, result: FrameResult) -> None:
        for handler in self.handlers:
            name = getattr(handler, "__name__", type(handler).__name__)
            t0 = time.perf_counter()
            try:
                handler(self, result)
            except Exception as exc:  # one frame's fault, never the device's end
                kind = f"{name}: {type(exc).__name__}"
                self.stats.frame_errors[kind] = self.stats.frame_errors.get(kind, 0) + 1
                self._faults.error(
                    kind, f"frame {result.index}: {name} failed: {exc}; the loop goes on", exc
                )
            times = self._handler_time.setdefault(name, [])
            times.append(time.perf_counter() - t0)
            if len(times) > 1000:
                del times[:500]

    # --- events -------------------------------------------------------------------------

    def queue_event(self, event: Event) -> bool:
        """Offer an event to the ``fr_event_before_queue`` hooks (:func:`run_event_hooks`),
        then to the sink. False when a plugin vetoed it or it was dropped (the outbox's
        ``reject_new`` policy, or too many events already waiting for a faulty outbox); an
        event the sink could not take now is kept and retried (True)."""
        checked, invalid = run_event_hooks(self.registry.pm, event, self)
        self.stats.events_invalid += invalid
        if checked is None:
            self.stats.events_vetoed += 1
            return False
        if self.spool is None:
            self.stats.events_queued += 1
            return True
        return self.spool.offer(checked)  # stored, or kept to retry; False: dropped

    def _stored(self, event: Event) -> None:
        self.stats.events_queued += 1
