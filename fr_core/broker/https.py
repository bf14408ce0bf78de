"""The reference broker: the HTTPS side of the broker contract (docs/broker-api.md,
docs/openapi.yaml), on SQLite through SQLAlchemy, with fault injection for tests.

Run it with ``fr-edge broker serve``; tests start it in-process::

    broker = ReferenceBroker(tmp_path / "broker", api_key="k").start()
    broker.url, broker.ca_path     # https://127.0.0.1:PORT, the CA to trust
    broker.store.enrol("EMP-1", embedding, "SFace")
    broker.faults.add(status=503, count=2)
    broker.stop()

Events are deduplicated by event_id: the ledger (``store.ledger()``) holds each once, with
the number of times it was delivered.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fr_core.broker.certs import CertificateAuthority
from fr_core.broker.store import BrokerStore

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024 * 1024
MAX_BATCH = 500
MAX_LIMIT = 5000
DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


@dataclass(frozen=True)
class Exchange:
    """One request and its answer, recorded when ``ReferenceBroker.exchanges`` is a list."""

    method: str
    path: str
    authorization: bool  # whether an Authorization header was sent (never its value)
    content_type: str | None
    request_body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes


@dataclass
class Fault:
    status: int | None = None  # answer with this HTTP status
    retry_after: float | None = None  # with a Retry-After header (seconds)
    delay: float = 0.0  # wait before answering
    drop: bool = False  # close the connection without an answer
    path: str | None = None  # only requests whose path contains this


class FaultPlan:
    """Faults applied to the next matching requests, in order (thread-safe)."""

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()
        self.applied = 0

    def add(self, *, count: int = 1, **fault: Any) -> None:
        with self._lock:
            for _ in range(count):
                self._queue.append(Fault(**fault))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pending(self) -> int:
        return len(self._queue)

    def take(self, path: str) -> Fault | None:
        with self._lock:
            for i, f in enumerate(self._queue):
                if f.path is None or f.path in path:
                    del self._queue[i]
                    self.applied += 1
                    return f
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold every answer back ~40 ms on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet; never log headers
        log.debug("broker: " + fmt, *args)

    # --- plumbing ---

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        exchanges = self.server.broker.exchanges
        if exchanges is not None:
            exchanges.append(
                Exchange(
                    self.command,
                    self.path,
                    bool(self.headers.get("Authorization")),
                    self.headers.get("Content-Type"),
                    getattr(self, "_raw", b""),
                    status,
                    dict(headers or {}),
                    data,
                )
            )
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, {"error": {"code": code, "message": message}}, headers)

    def _read_body(self) -> bool:
        """Read the whole body first, so an early answer never leaves it in the stream of a
        kept-alive connection. False (answered 413, connection closed) when too large."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._error(413, "too_large", f"body over {MAX_BODY} bytes")
            return False
        self._raw = self.rfile.read(length)
        return True

    def _body(self) -> Any:
        try:
            return json.loads(self._raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._error(400, "bad_json", "the body is not UTF-8 JSON")
            return None

    def _fault(self) -> bool:
        f = self.server.broker.faults.take(self.path)
        if f is None:
            return False
        if f.delay:
            time.sleep(f.delay)
        if f.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if f.status is not None:
            headers = {"Retry-After": str(int(f.retry_after))} if f.retry_after is not None else {}
            code = "rate_limited" if f.status == 429 else "unavailable"
            self._error(f.status, code, "injected fault", headers)
            return True
        return False

    def _route(self) -> tuple[str, str] | None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) >= 4 and parts[0] == "v1" and parts[1] == "devices":
            device = parts[2]
            rest = "/".join(parts[3:])
            if not DEVICE_RE.match(device):
                self._error(404, "not_found", "unknown device id format")
                return None
            if not self._authorised(device):
                return None
            return device, rest
        if self.path.startswith("/admin/"):
            return "", self.path
        self._error(404, "not_found", f"no such endpoint: {urlsplit(self.path).path}")
        return None

    def _authorised(self, device: str) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        expected = self.server.broker.key_for(device)
        if scheme != "Bearer" or not token:
            self._error(
                401,
                "unauthorized",
                "missing Authorization: Bearer <api key>",
                {"WWW-Authenticate": "Bearer"},
            )
            return False
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            self._error(
                401,
                "unauthorized",
                "invalid API key for this device",
                {"WWW-Authenticate": "Bearer"},
            )
            return False
        return True

    # --- endpoints ---

    def do_GET(self) -> None:
        self._raw = b""
        if self._fault():
            return
        route = self._route()
        if route is None:
            return
        _, rest = route
        if rest == "enrollments/changes":
            q = parse_qs(urlsplit(self.path).query)
            try:
                since = int(q.get("since_version", ["0"])[0])
                limit = int(q.get("limit", ["500"])[0])
                if since < 0 or not 1 <= limit <= MAX_LIMIT:
                    raise ValueError
            except ValueError:
                self._error(
                    400,
                    "bad_request",
                    f"since_version must be an integer >= 0 and limit 1..{MAX_LIMIT}",
                )
                return
            cursor = q.get("cursor", [None])[0]
            try:
                page = self.server.broker.store.changes_page(since, limit, cursor)
            except LookupError as exc:
                self._error(410, "snapshot_expired", str(exc))
                return
            except ValueError:
                self._error(400, "bad_request", "malformed cursor")
                return
            self._send(200, page)
        elif rest.startswith("/admin/ledger"):
            if self._admin():
                self._send(200, self.server.broker.store.ledger())
        else:
            self._error(404, "not_found", "no such endpoint")

    def do_POST(self) -> None:
        if not self._read_body() or self._fault():
            return
        route = self._route()
        if route is None:
            return
        device, rest = route
        if rest == "events":
            body = self._body()
            if body is None:
                return
            batch = body.get("events") if isinstance(body, dict) else None
            if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_BATCH:
                self._error(400, "bad_request", f'body must be {{"events": [1..{MAX_BATCH}]}}')
                return
            self._send(200, self.server.broker.store.record_events(device, batch))
        elif rest == "heartbeat":
            body = self._body()
            if body is None:
                return
            if not isinstance(body, dict):
                self._error(400, "bad_request", "a heartbeat is a JSON object")
                return
            self.server.broker.store.record_heartbeat(device, body)
            self._send(204)
        elif rest.startswith("/admin/faults"):
            if self._admin():
                body = self._body()
                if isinstance(body, dict):
                    count = int(body.pop("count", 1))
                    self.server.broker.faults.add(count=count, **body)
                    self._send(204)
        else:
            self._error(404, "not_found", "no such endpoint")

    def _admin(self) -> bool:
        token = self.headers.get("X-Admin-Token", "")
        if not hmac.compare_digest(token.encode(), self.server.broker.admin_token.encode()):
            self._error(403, "forbidden", "admin token required")
            return False
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    broker: ReferenceBroker

    def __init__(self, addr: tuple[str, int], context: ssl.SSLContext | None) -> None:
        super().__init__(addr, _Handler)
        self.context = context

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.context is not None:
            sock.settimeout(30)
            try:
                sock = self.context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                sock.close()
                raise
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("broker: connection from %s ended with an error", client_address)


class ReferenceBroker:
    """HTTPS (or, with ``tls=False``, plain HTTP for tests) broker on loopback."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        api_key: str | None = None,
        api_keys: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = True,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        client_ca: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = BrokerStore(self.data_dir / "broker.db")
        self.faults = FaultPlan()
        self.api_key = api_key
        self.api_keys = dict(api_keys or {})
        self.admin_token = secrets.token_hex(16)
        self.exchanges: list[Exchange] | None = None  # set to [] to record traffic
        self.host, self.port, self.tls = host, port, tls
        self.ca_path: Path | None = None
        self._certfile, self._keyfile, self._client_ca = certfile, keyfile, client_ca
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def inject_failures(self, count: int) -> None:
        """The next ``count`` requests fail with 503 (the conformance suite's generic fault)."""
        self.faults.add(status=503, count=count)

    def key_for(self, device_id: str) -> str | None:
        return self.api_keys.get(device_id, self.api_key)

    def _context(self) -> ssl.SSLContext:
        if self._certfile is None:
            pki = self.data_dir / "pki"
            if (pki / "server.pem").exists() and (pki / "ca.pem").exists():
                self.ca_path = pki / "ca.pem"
            else:
                ca = CertificateAuthority(pki, "fr-edge reference broker CA")
                ca.issue("server", hosts=(self.host, "localhost", "127.0.0.1"))
                self.ca_path = ca.cert_path
            self._certfile, self._keyfile = pki / "server.pem", pki / "server.key"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self._certfile), str(self._keyfile))
        if self._client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(self._client_ca))
        return ctx

    def start(self) -> ReferenceBroker:
        self._server = _Server((self.host, self.port), self._context() if self.tls else None)
        self._server.broker = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fr-broker", daemon=True
        )
        self._thread.start()
        log.info("reference broker on %s", self.url)
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self) -> None:
        """Stop the server and start it again on the same port, its data kept (the
        conformance suite's broker restart)."""
        self.stop()
        self.start()

    def __enter__(self) -> ReferenceBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
