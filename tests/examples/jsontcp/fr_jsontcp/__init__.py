"""The ``jsontcp`` transport for fr-edge: JSON lines over TCP+TLS (``jsontcps://host:port``).

Protocol (version 1), one UTF-8 JSON object per line, each direction:

1. The device opens a TLS connection and sends
   ``{"op": "hello", "v": 1, "device_id": ..., "api_key": ...}``.
   The broker answers ``{"ok": true}`` or ``{"ok": false, "error": {"code", "message"}}``
   (code ``unauthorized``) and closes.
2. Then requests, answered in order, one answer per request, each echoing ``id``:

   - ``{"id", "op": "events", "events": [...]}`` -> ``{"id", "ok": true, "result":
     {"accepted", "duplicates", "rejected"}}`` (the HTTPS answer's body)
   - ``{"id", "op": "heartbeat", "payload": {...}}`` -> ``{"id", "ok": true}``
   - ``{"id", "op": "sync", "since_version", "limit", "cursor"}`` -> ``{"id", "ok": true,
     "page": {...}}`` (a page as in fr-edge's docs/broker-api.md)

   A failure is ``{"id", "ok": false, "error": {"code", "message", "retry_after"?}}`` with
   code ``unavailable`` (retry later), ``unauthorized`` or ``bad_request``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from fr_core import hookimpl
from fr_core.delivery.transports import BrokerConnectionConfig, events_answer
from fr_core.errors import (
    TransportAuthError,
    TransportProtocolError,
    TransportTLSError,
    TransportUnavailable,
)
from fr_core.interfaces import SendResult
from fr_core.storage import wire_json

PROTOCOL_VERSION = 1
DEFAULT_PORT = 8765
MAX_LINE = 64 * 1024 * 1024


class JsontcpConfig(BrokerConnectionConfig):
    """Options of the ``jsontcp`` transport: broker_url, device_id, api_key, allow_insecure and
    the TLS files come from BrokerConnectionConfig (defaulting to the top-level config); add
    your protocol's own options here, secrets as pydantic.SecretStr."""

    timeout: float = 10.0


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


class JsontcpTransport:
    def __init__(
        self,
        config: JsontcpConfig,
        device_id: str,
        broker_url: str,
        api_key: str | None,
        allow_insecure: bool,
    ) -> None:
        self.config = config
        self.device_id, self.broker_url = device_id, broker_url
        self._api_key, self.allow_insecure = api_key, allow_insecure
        parts = urlsplit(broker_url)
        if parts.scheme not in ("jsontcps", "jsontcp"):
            raise ValueError(f"jsontcp: unsupported scheme {parts.scheme!r}")
        self._tls = parts.scheme == "jsontcps"
        if not self._tls and not allow_insecure:
            raise ValueError("jsontcp: jsontcp:// (no TLS) needs allow_insecure")
        self._host = parts.hostname or "localhost"
        self._port = parts.port or DEFAULT_PORT
        self._lock = threading.Lock()
        self._sock: Any = None
        self._reader: Any = None
        self._next_id = 0

    # -- connection ---------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            cafile=str(self.config.ca_bundle) if self.config.ca_bundle else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.config.client_cert:
            ctx.load_cert_chain(
                str(self.config.client_cert),
                str(self.config.client_key) if self.config.client_key else None,
            )
        return ctx

    def _close_locked(self) -> None:
        for f in (self._reader, self._sock):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._sock = self._reader = None

    def _connect_locked(self) -> None:
        if self._sock is not None:
            return
        where = f"{self._host}:{self._port}"
        try:
            raw = socket.create_connection((self._host, self._port), timeout=self.config.timeout)
        except OSError as exc:
            raise TransportUnavailable(
                f"jsontcp: cannot reach {where}: {exc.__class__.__name__}"
            ) from None
        try:
            if self._tls:
                sock = self._context().wrap_socket(raw, server_hostname=self._host)
            else:
                sock = raw
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            raise TransportTLSError(
                f"jsontcp: the certificate of {where} is not trusted: {exc.verify_message}"
            ) from None
        except ssl.SSLError as exc:
            raw.close()
            raise TransportTLSError(
                f"jsontcp: TLS handshake with {where} failed: {exc.reason}"
            ) from None
        except OSError as exc:
            raw.close()
            raise TransportUnavailable(
                f"jsontcp: connection to {where} failed: {exc.__class__.__name__}"
            ) from None
        sock.settimeout(self.config.timeout)
        self._sock, self._reader = sock, sock.makefile("rb")
        try:
            answer = self._exchange_locked(
                {
                    "op": "hello",
                    "v": PROTOCOL_VERSION,
                    "device_id": self.device_id,
                    "api_key": self._api_key or "",
                }
            )
        except BaseException:
            self._close_locked()
            raise
        if not answer.get("ok"):
            self._close_locked()
            self._raise_error(answer, "hello")

    def _exchange_locked(
        self, request: Mapping[str, Any], body: bytes | None = None
    ) -> dict[str, Any]:
        line = body if body is not None else _dumps(dict(request))
        try:
            self._sock.sendall(line)
            reply = self._reader.readline(MAX_LINE + 1)
        except (OSError, ValueError) as exc:
            self._close_locked()
            raise TransportUnavailable(
                f"jsontcp: connection lost: {exc.__class__.__name__}"
            ) from None
        if not reply:
            self._close_locked()
            raise TransportUnavailable("jsontcp: the broker closed the connection")
        if not reply.endswith(b"\n"):
            self._close_locked()
            raise TransportProtocolError("jsontcp: answer line too long or truncated")
        try:
            answer = json.loads(reply)
        except ValueError:
            self._close_locked()
            raise TransportProtocolError("jsontcp: the broker's answer is not JSON") from None
        if not isinstance(answer, dict):
            self._close_locked()
            raise TransportProtocolError("jsontcp: the broker's answer is not an object")
        if "id" in request and answer.get("id") != request["id"]:
            self._close_locked()
            raise TransportProtocolError("jsontcp: answer for another request")
        return answer

    @staticmethod
    def _raise_error(answer: Mapping[str, Any], op: str) -> None:
        err = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        code, message = str(err.get("code", "")), str(err.get("message", ""))[:500]
        if code == "unauthorized":
            raise TransportAuthError(f"jsontcp: the broker refused the device's credentials ({op})")
        if code == "unavailable":
            retry = err.get("retry_after")
            retry_after = (
                float(retry)
                if isinstance(retry, (int, float)) and not isinstance(retry, bool)
                else None
            )
            raise TransportUnavailable(
                f"jsontcp: broker unavailable ({op}): {message}", retry_after=retry_after
            )
        raise TransportProtocolError(f"jsontcp: {op} failed: {code or 'error'}: {message}")

    def _request(
        self, op: str, fields: Mapping[str, Any], body: bytes | None = None
    ) -> dict[str, Any]:
        with self._lock:
            self._connect_locked()
            self._next_id += 1
            request = {"id": self._next_id, "op": op, **fields}
            if body is not None:
                # prefix carries id and op; body is the rest of the object already serialised
                head = json.dumps(request, separators=(",", ":"))[:-1]
                body = head.encode("utf-8") + b"," + body + b"}\n"
            answer = self._exchange_locked(request, body)
        if not answer.get("ok"):
            self._raise_error(answer, op)
        return answer

    # -- the Transport interface --------------------------------------------------------

    def start(self) -> None:
        """Connect and authenticate. TransportAuthError for bad credentials, TransportTLSError
        for an untrusted certificate, TransportUnavailable when the broker cannot be reached."""
        with self._lock:
            self._connect_locked()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the connection; safe twice and after a failed start."""
        if self._lock.acquire(timeout=max(timeout, 0.0)):
            try:
                self._close_locked()
            finally:
                self._lock.release()

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> SendResult:
        if not events:
            return SendResult()
        body = b'"events":[' + b",".join(wire_json(e) for e in events) + b"]"
        answer = self._request("events", {}, body)
        try:
            acknowledged, rejected = events_answer(answer.get("result"))
        except ValueError as exc:
            raise TransportProtocolError(f"jsontcp: bad events answer: {exc}") from None
        return SendResult(acknowledged=acknowledged, rejected=rejected)

    def send_heartbeat(self, payload: Mapping[str, Any]) -> None:
        self._request("heartbeat", {"payload": dict(payload)})

    def fetch_changes(
        self, since_version: int, limit: int, cursor: str | None = None
    ) -> Mapping[str, Any]:
        answer = self._request(
            "sync", {"since_version": since_version, "limit": limit, "cursor": cursor}
        )
        page = answer.get("page")
        if not isinstance(page, dict):
            raise TransportProtocolError("jsontcp: sync answer without a page")
        return page


@hookimpl
def fr_register_transports(register: Any) -> None:
    def factory(cfg: JsontcpConfig, ctx: Any) -> JsontcpTransport:
        t = cfg.target(ctx, "jsontcp")
        return JsontcpTransport(cfg, t.device_id, t.broker_url, t.api_key, t.allow_insecure)

    register(
        "jsontcp",
        factory,
        JsontcpConfig,
        url_schemes={"jsontcps": True, "jsontcp": False},
        description="JSON lines over TCP+TLS",
    )
