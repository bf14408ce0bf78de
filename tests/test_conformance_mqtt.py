"""The mqtt transport passes the transport conformance suite through mosquitto + the bridge."""

from __future__ import annotations

import pytest

from fr_core.broker import MqttBroker
from fr_core.broker.mosquitto import mosquitto_binary
from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry
from fr_core.testing import require
from fr_core.testing.conformance import TransportConformance

REGISTRY = build_registry()


class TestMqttConformance(TransportConformance):
    @pytest.fixture
    def broker(self, tmp_path):
        require(mosquitto_binary(), "mosquitto is not installed (apt-get install mosquitto)")
        with MqttBroker(tmp_path / "mqtt", {self.DEVICE_ID: self.API_KEY}) as b:
            yield b

    @pytest.fixture
    def make_transport(self, broker):
        def make(api_key=TransportConformance.API_KEY, ca_bundle=None):
            return REGISTRY.create(
                ComponentKind.TRANSPORT,
                "mqtt",
                {
                    "broker_url": broker.url,
                    "device_id": self.DEVICE_ID,
                    "api_key": api_key,
                    "ca_bundle": str(ca_bundle or broker.ca_path),
                    "connect_timeout": 5,
                    "publish_timeout": 5,
                    "sync_timeout": 10,
                },
            )

        return make
