"""A test broker for the jsontcp protocol: a TLS line server on loopback whose requests land
in fr-edge's reference BrokerStore, with the surface the conformance suite expects."""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
import socketserver
import ssl
import threading
from pathlib import Path
from typing import Any

from fr_core.broker import BrokerStore
from fr_core.broker.certs import CertificateAuthority

MAX_LINE = 64 * 1024 * 1024


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        harness = self.server.harness
        try:
            conn = harness.ssl_context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        harness._track(conn)
        try:
            self._serve(conn, harness)
        except (OSError, ValueError):
            pass
        finally:
            harness._untrack(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _serve(self, conn: ssl.SSLSocket, harness: JsonTcpBroker) -> None:
        reader = conn.makefile("rb")
        device_id: str | None = None
        while True:
            raw = reader.readline(MAX_LINE + 1)
            if not raw:
                return
            try:
                req = json.loads(raw)
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                conn.sendall(
                    _line(
                        {
                            "ok": False,
                            "error": {"code": "bad_request", "message": "not a JSON object"},
                        }
                    )
                )
                return
            rid = req.get("id")
            if harness._take_failure():
                conn.sendall(
                    _line(
                        {
                            "id": rid,
                            "ok": False,
                            "error": {"code": "unavailable", "message": "injected"},
                        }
                    )
                )
                if device_id is None:
                    return
                continue
            op = req.get("op")
            if device_id is None:
                if op != "hello":
                    conn.sendall(
                        _line(
                            {
                                "id": rid,
                                "ok": False,
                                "error": {"code": "unauthorized", "message": "hello first"},
                            }
                        )
                    )
                    return
                dev, key = req.get("device_id"), req.get("api_key")
                expected = harness.devices.get(dev) if isinstance(dev, str) else None
                if (
                    expected is None
                    or not isinstance(key, str)
                    or not hmac.compare_digest(expected.encode(), key.encode())
                ):
                    conn.sendall(
                        _line(
                            {
                                "ok": False,
                                "error": {
                                    "code": "unauthorized",
                                    "message": "unknown device or wrong key",
                                },
                            }
                        )
                    )
                    return
                device_id = dev
                conn.sendall(_line({"ok": True}))
                continue
            conn.sendall(_line(harness._dispatch(device_id, rid, op, req)))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    harness: JsonTcpBroker


class JsonTcpBroker:
    """jsontcps:// broker on loopback: ``store``, ``url``, ``ca_path``, ``restart()``,
    ``inject_failures``."""

    def __init__(self, folder: Path, devices: dict[str, str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.devices = dict(devices)
        self.store = BrokerStore(folder / "broker.db")
        self._ca = CertificateAuthority(folder / "ca")
        pair = self._ca.issue("jsontcp-broker")
        self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_context.load_cert_chain(str(pair.cert), str(pair.key))
        self._failures = 0
        self._lock = threading.Lock()
        self._conns: set[Any] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def ca_path(self) -> Path:
        return self._ca.cert_path

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"jsontcps://{host}:{port}"

    def inject_failures(self, count: int) -> None:
        """The next ``count`` requests are answered ``unavailable``."""
        with self._lock:
            self._failures += count

    def _take_failure(self) -> bool:
        with self._lock:
            if self._failures > 0:
                self._failures -= 1
                return True
            return False

    def _track(self, conn: Any) -> None:
        with self._lock:
            self._conns.add(conn)

    def _untrack(self, conn: Any) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _dispatch(self, device_id: str, rid: Any, op: Any, req: dict[str, Any]) -> dict[str, Any]:
        def bad(message: str) -> dict[str, Any]:
            return {"id": rid, "ok": False, "error": {"code": "bad_request", "message": message}}

        if op == "events":
            batch = req.get("events")
            if not isinstance(batch, list):
                return bad("events must be a list")
            return {"id": rid, "ok": True, "result": self.store.record_events(device_id, batch)}
        if op == "heartbeat":
            payload = req.get("payload")
            if not isinstance(payload, dict):
                return bad("payload must be an object")
            self.store.record_heartbeat(device_id, payload)
            return {"id": rid, "ok": True}
        if op == "sync":
            since, limit, cursor = req.get("since_version"), req.get("limit"), req.get("cursor")
            if type(since) is not int or type(limit) is not int or since < 0 or limit < 1:
                return bad("since_version and limit must be integers")
            if cursor is not None and not isinstance(cursor, str):
                return bad("cursor must be a string")
            try:
                page = self.store.changes_page(since, limit, cursor)
            except ValueError as exc:
                return bad(str(exc))
            return {"id": rid, "ok": True, "page": page}
        return bad(f"unknown op {op!r}")

    def restart(self) -> None:
        """Stop the server (dropping every connection) and start it again on the same
        address, the store kept."""
        assert self._server is not None, "not started"
        port = self._server.server_address[1]
        self.stop()
        self.start(port)

    def start(self, port: int = 0) -> JsonTcpBroker:
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.harness = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> JsonTcpBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
