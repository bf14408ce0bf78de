"""The example plugin's own tests: they use fr-edge's pytest fixtures, as a third party would."""

import json

import pytest

from fr_core import ConfigError, FacialIdEvent
from fr_core.interfaces import ComponentKind, Transport


def test_registered_through_its_entry_point(fr_registry):
    reg = fr_registry.get(ComponentKind.TRANSPORT, "jsonl")
    assert reg.plugin == "example_transport"
    assert reg.distribution == "fr-edge-example-transport 1.0.0"


def test_sends_and_acknowledges_events(fr_registry, tmp_path):
    out = tmp_path / "events.jsonl"
    transport = fr_registry.create(ComponentKind.TRANSPORT, "jsonl", {"path": str(out)})
    assert isinstance(transport, Transport)
    transport.start()
    events = [
        FacialIdEvent.create(
            device_id="cam-001", user_id=f"EMP-{i}", distance=0.3, frames_tracked=5
        ).to_dict()
        for i in range(3)
    ]
    result = transport.send_events(events)
    transport.stop()
    assert list(result.acknowledged) == [e["event_id"] for e in events]
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == events


def test_config_errors_name_the_key(fr_registry):
    with pytest.raises(ConfigError, match=r"transport\.fsync"):
        fr_registry.validate_options(
            ComponentKind.TRANSPORT, "jsonl", {"path": "x", "fsync": "maybe"}, "transport"
        )
