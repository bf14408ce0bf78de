"""The fr-edge transport conformance suite, run against the jsontcp transport, with the
``broker`` fixture overridden by a jsontcp harness (tests/harness.py)."""

import pytest
from fr_jsontcp import JsontcpConfig, JsontcpTransport
from harness import JsonTcpBroker

from fr_core.testing.conformance import TransportConformance


class TestJsontcpConformance(TransportConformance):
    @pytest.fixture
    def broker(self, tmp_path):
        with JsonTcpBroker(
            tmp_path / "jsontcp-broker", {self.DEVICE_ID: TransportConformance.API_KEY}
        ) as b:
            yield b

    @pytest.fixture
    def make_transport(self, broker):
        def make(api_key=TransportConformance.API_KEY, ca_bundle=None):
            config = JsontcpConfig(ca_bundle=ca_bundle or broker.ca_path)
            return JsontcpTransport(config, self.DEVICE_ID, broker.url, api_key, False)

        return make
