"""What every broker transport's configuration shares: where the broker is, who the device
is, its credentials and TLS material, with the top-level config as the default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator

from fr_core.errors import ConfigError


@dataclass(frozen=True)
class BrokerTarget:
    device_id: str
    broker_url: str
    api_key: str | None
    allow_insecure: bool


class BrokerConnectionConfig(BaseModel):
    """Base of the transports' config models (https, mqtt, and third-party ones)."""

    model_config = ConfigDict(extra="forbid")

    broker_url: str | None = Field(None, description="default: the top-level broker_url")
    device_id: str | None = Field(None, description="default: the top-level device_id")
    api_key: SecretStr | None = Field(None, description="default: the top-level api_key")
    allow_insecure: bool | None = Field(None, description="default: the top-level option")
    # FilePath: `fr-edge config check` says a missing file is missing, as building the
    # component would, without connecting anywhere
    ca_bundle: FilePath | None = Field(None, description="PEM file of the CAs to trust")
    client_cert: FilePath | None = Field(None, description="client certificate (PEM)")
    client_key: FilePath | None = Field(None, description="its private key (PEM)")

    @model_validator(mode="after")
    def _cert_and_key(self) -> BrokerConnectionConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")
        return self

    def target(self, context: Any, transport: str) -> BrokerTarget:
        """Resolve against the device config in ``context`` and check the TLS files."""
        app = getattr(context, "app_config", None)
        broker_url = self.broker_url or (app.broker_url if app else None)
        device_id = self.device_id or (app.device_id if app else None)
        if not broker_url or not device_id:
            raise ConfigError(f"the {transport} transport needs broker_url and device_id")
        if self.api_key is not None:
            key: str | None = self.api_key.get_secret_value()
        else:
            key = app.api_key_value() if app else None
        insecure = self.allow_insecure
        if insecure is None:
            insecure = bool(app and app.allow_insecure)
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigError(f"{transport} transport: client_cert and client_key go together")
        for p in (self.ca_bundle, self.client_cert, self.client_key):
            if p is not None and not p.is_file():
                raise ConfigError(f"{transport} transport: {p} does not exist")
        return BrokerTarget(device_id, broker_url, key, insecure)


def events_answer(data: Any) -> tuple[list[str], dict[str, str]]:
    """(ids stored, {id: reason} refused) from a broker's answer to a batch of events
    (docs/broker-api.md; the same body on HTTPS and on MQTT's events/ack). ValueError, saying
    what is wrong, for anything else: no answer is half-believed."""
    if not isinstance(data, dict):
        raise ValueError(f"the answer is {type(data).__name__}, not an object")
    stored: list[str] = []
    for key in ("accepted", "duplicates"):
        ids = data.get(key, [])
        if not isinstance(ids, list) or not all(isinstance(x, str) and x for x in ids):
            raise ValueError(f"{key} must be a list of event ids")
        stored += ids
    rejected = data.get("rejected", {})
    if rejected is None:
        rejected = {}
    if not isinstance(rejected, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in rejected.items()
    ):
        raise ValueError("rejected must map event ids to reasons")
    return stored, dict(rejected)
