"""Transport plugin ``https``: the broker contract over HTTPS with requests (docs/openapi.yaml).

TLS verification is always on (a custom CA bundle may be given, never switched off); plain
``http://`` is refused unless ``allow_insecure`` is set explicitly. Every call has a connect and
a read timeout. Retries (urllib3's Retry) back off exponentially with jitter and honour
Retry-After (capped). Redirects are never followed, so credentials are never forwarded. The API
key travels only in the ``Authorization: Bearer`` header: never in a URL, a log line or an
exception message.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

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
from fr_core.interfaces import SendResult
from fr_core.logsetup import register_secret
from fr_core.storage import wire_json

log = logging.getLogger(__name__)
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_BATCH = 500


class HttpsTransportConfig(BrokerConnectionConfig):
    """Connection fields from BrokerConnectionConfig (ca_bundle defaults to
    $REQUESTS_CA_BUNDLE, else the bundled public CAs), plus these."""

    connect_timeout: float = Field(5.0, gt=0, le=120, description="seconds to connect")
    read_timeout: float = Field(30.0, gt=0, le=600, description="seconds to wait for an answer")
    max_retries: int = Field(3, ge=0, le=20, description="retries of one call")
    backoff_base: float = Field(0.5, ge=0, le=60, description="first retry delay, doubling")
    backoff_max: float = Field(30.0, ge=0, le=3600, description="longest retry delay")
    retry_after_max: float = Field(300.0, ge=0, le=86400, description="cap on Retry-After")
    batch_size: int = Field(100, ge=1, le=MAX_BATCH, description="events per request")
    proxy: str | None = Field(None, description="HTTPS proxy URL (environment proxies are ignored)")


class HttpsTransport:
    def __init__(
        self,
        config: HttpsTransportConfig,
        device_id: str,
        broker_url: str,
        api_key: str | None,
        allow_insecure: bool,
    ) -> None:
        parts = urlsplit(broker_url)
        if parts.scheme == "http" and not allow_insecure:
            raise ConfigError(
                "the https transport refuses http:// broker URLs; use https://, or set "
                "allow_insecure: true (tests on loopback only)"
            )
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(
                f"the https transport needs an https:// broker URL, got {parts.scheme}://"
            )
        self.config = config
        self.device_id = device_id
        self.base = broker_url.rstrip("/") + f"/v1/devices/{quote(device_id, safe='')}"
        self.host = parts.hostname
        self._api_key = api_key
        register_secret(api_key)
        self._session: Any = None
        self._verify: str | bool = (
            str(config.ca_bundle)
            if config.ca_bundle
            else (os.environ.get("REQUESTS_CA_BUNDLE") or True)
        )

    # --- lifecycle ---

    def start(self) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        cfg = self.config
        session = requests.Session()
        session.trust_env = False  # no .netrc credentials, no env CA/proxy overriding ours
        if cfg.proxy:
            session.proxies = {"https": cfg.proxy, "http": cfg.proxy}
        if self._api_key:
            session.headers["Authorization"] = f"Bearer {self._api_key}"
        session.headers["User-Agent"] = "fr-edge/https-transport"
        adapter = HTTPAdapter(max_retries=_retry(cfg), pool_connections=2, pool_maxsize=4)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        if cfg.client_cert is not None:
            session.cert = (str(cfg.client_cert), str(cfg.client_key))
        self._session = session

    @property
    def max_send_seconds(self) -> float:
        """The longest one ``send_events`` can take: every try's connect and read timeouts
        and the back-off between them (the outbox sizes its leases from it)."""
        c = self.config
        tries = c.max_retries + 1
        waits = sum(min(c.backoff_max, c.backoff_base * 2**i) for i in range(c.max_retries))
        return tries * (c.connect_timeout + c.read_timeout) + waits

    def stop(self, timeout: float = 5.0) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # --- calls ---

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        import requests

        if self._session is None:
            self.start()
        url = self.base + path
        try:
            resp = self._session.request(
                method,
                url,
                timeout=(self.config.connect_timeout, self.config.read_timeout),
                verify=self._verify,
                allow_redirects=False,
                **kw,
            )
        except requests.exceptions.SSLError as exc:
            raise TransportTLSError(
                f"TLS with {self.host} failed: {_reason(exc)} (check ca_bundle, the broker's "
                "certificate and its validity dates)"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransportUnavailable(f"broker {self.host} unreachable: {_reason(exc)}") from None
        except requests.exceptions.RetryError as exc:
            raise TransportUnavailable(f"broker {self.host} kept failing: {_reason(exc)}") from None
        status = resp.status_code
        if 200 <= status < 300:
            return resp
        message = _broker_message(resp)
        if status in (401, 403):
            raise TransportAuthError(
                f"broker {self.host} refused the credentials of device {self.device_id!r} "
                f"(HTTP {status}: {message})"
            )
        if 300 <= status < 400:
            raise TransportProtocolError(
                f"broker {self.host} answered a redirect (HTTP {status}); redirects are not "
                "followed, so credentials are never forwarded: fix broker_url"
            )
        if status in RETRY_STATUSES:
            ra = resp.headers.get("Retry-After")
            retry_after = float(ra) if ra and ra.isdigit() else None
            if retry_after is not None:
                retry_after = min(retry_after, self.config.retry_after_max)
            raise TransportUnavailable(
                f"broker {self.host} answered HTTP {status}: {message}", retry_after
            )
        raise TransportProtocolError(f"broker {self.host} answered HTTP {status}: {message}")

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> SendResult:
        acked: list[str] = []
        rejected: dict[str, str] = {}
        items = list(events)
        for i in range(0, len(items), self.config.batch_size):
            chunk = items[i : i + self.config.batch_size]
            body = b'{"events":[' + b",".join(wire_json(e) for e in chunk) + b"]}"
            resp = self._request(
                "POST", "/events", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                stored, refused = events_answer(_json(resp, self.host))
            except ValueError as exc:
                raise TransportProtocolError(
                    f"broker {self.host} answered a batch of events with an unexpected body: {exc}"
                ) from None
            sent = {str(e.get("event_id")) for e in chunk}
            acked += [x for x in stored if x in sent]  # never an id that was not sent
            rejected.update({k: v for k, v in refused.items() if k in sent})
        return SendResult(acknowledged=acked, rejected=rejected)

    def send_heartbeat(self, payload: Mapping[str, Any]) -> None:
        self._request(
            "POST",
            "/heartbeat",
            data=json.dumps(dict(payload)),
            headers={"Content-Type": "application/json"},
        )

    def fetch_changes(self, since_version: int, limit: int, cursor: str | None = None) -> bytes:
        params: dict[str, Any] = {"since_version": since_version, "limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        content: bytes = self._request("GET", "/enrollments/changes", params=params).content
        return content


def _retry(cfg: HttpsTransportConfig) -> Any:
    from urllib3.util.retry import Retry

    class CappedRetry(Retry):
        def get_retry_after(self, response: Any) -> float | None:
            value = super().get_retry_after(response)
            return None if value is None else min(value, cfg.retry_after_max)

    return CappedRetry(
        total=cfg.max_retries,
        connect=cfg.max_retries,
        read=cfg.max_retries,
        status=cfg.max_retries,
        redirect=0,
        backoff_factor=cfg.backoff_base,
        backoff_max=cfg.backoff_max,
        backoff_jitter=cfg.backoff_base,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text[:300]


def _broker_message(resp: Any) -> str:
    try:
        err = resp.json().get("error", {})
        return f"{err.get('code', '?')}: {err.get('message', '')}"[:300]
    except (ValueError, AttributeError, RecursionError):
        return (resp.reason or "")[:100]


def _json(resp: Any, host: str) -> Any:
    try:
        return resp.json()
    except (ValueError, RecursionError):
        raise TransportProtocolError(f"broker {host} answered with invalid JSON") from None


@hookimpl
def fr_register_transports(register: Any) -> None:
    def factory(cfg: HttpsTransportConfig, ctx: Any) -> HttpsTransport:
        t = cfg.target(ctx, "https")
        return HttpsTransport(cfg, t.device_id, t.broker_url, t.api_key, t.allow_insecure)

    register(
        "https",
        factory,
        HttpsTransportConfig,
        url_schemes={"https": True, "http": False},
        description="HTTPS (requests): batched events, sync pages, heartbeats",
    )
