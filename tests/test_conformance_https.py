"""The https transport passes the transport conformance suite."""

from __future__ import annotations

import pytest

from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry
from fr_core.testing.conformance import TransportConformance

REGISTRY = build_registry()


class TestHttpsConformance(TransportConformance):
    @pytest.fixture
    def make_transport(self, broker):
        def make(api_key=TransportConformance.API_KEY, ca_bundle=None):
            return REGISTRY.create(
                ComponentKind.TRANSPORT,
                "https",
                {
                    "broker_url": broker.url,
                    "device_id": self.DEVICE_ID,
                    "api_key": api_key,
                    "ca_bundle": str(ca_bundle or broker.ca_path),
                    "backoff_base": 0.02,
                    "max_retries": 1,
                },
            )

        return make
