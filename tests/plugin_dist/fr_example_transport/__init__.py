"""An fr-edge transport plugin in its own distribution: events appended to a JSON-lines file.

Useful on its own for bench tests and air-gapped set-ups, and the worked example of
docs/writing_plugins.md: an entry point, a config model, a component, and its tests.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fr_core import hookimpl
from fr_core.interfaces import SendResult


class JsonlTransportConfig(BaseModel):
    """Options of the ``jsonl`` transport (the block under ``transport:`` in the config)."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="file the events are appended to, one JSON object a line")
    heartbeat_path: Path | None = Field(None, description="file for heartbeats; none = drop")
    fsync: bool = Field(True, description="fsync after every batch, so an ack means on disk")


class JsonlTransport:
    """Appends each batch of events to a file; every event written is acknowledged."""

    def __init__(self, config: JsonlTransportConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._file: Any = None

    def start(self) -> None:
        self.config.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.config.path, "a", encoding="utf-8")  # noqa: SIM115

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> SendResult:
        if self._file is None:
            raise RuntimeError("jsonl transport is not started")
        lines = "".join(json.dumps(dict(e), separators=(",", ":")) + "\n" for e in events)
        with self._lock:
            self._file.write(lines)
            self._file.flush()
            if self.config.fsync:
                os.fsync(self._file.fileno())
        return SendResult(acknowledged=[str(e["event_id"]) for e in events])

    def send_heartbeat(self, payload: Mapping[str, Any]) -> None:
        if self.config.heartbeat_path is not None:
            with open(self.config.heartbeat_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(dict(payload)) + "\n")

    def fetch_changes(
        self, since_version: int, limit: int, cursor: str | None = None
    ) -> Mapping[str, Any]:
        # A file has no enrolment source: always "nothing new" (docs/broker-api.md).
        return {
            "from_version": since_version,
            "to_version": since_version,
            "latest_version": since_version,
            "more": False,
            "upserts": [],
            "deletions": [],
        }


@hookimpl
def fr_register_transports(register: Any) -> None:
    register(
        "jsonl",
        lambda config, context: JsonlTransport(config),
        JsonlTransportConfig,
        description="append events to a JSON-lines file (example plugin)",
    )
