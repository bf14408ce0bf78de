"""The short soak (issue 6): the real device process SIGKILLed and restarted at random
points while the broker fails, over both transports; every committed event reaches the
broker's ledger, the database passes integrity_check, the outbox ends empty. `make soak`
runs the long one (5,000 events per transport, 20 device kills, 20 mosquitto kills, 10
broker faults of each kind in turn) and docs/reliability.md keeps its figures."""

from __future__ import annotations

import pytest

from fr_core.broker.mosquitto import mosquitto_binary
from fr_core.testing import require
from fr_core.testing.soak import run_soak


@pytest.mark.parametrize("transport", ["https", "mqtt"])
def test_short_soak(transport, tmp_path, capsys):
    if transport == "mqtt":
        require(mosquitto_binary(), "mosquitto is not installed (apt-get install mosquitto)")
    report = run_soak(
        transport,
        tmp_path,
        events=400,
        device_kills=5,
        broker_faults=5,
        mosquitto_kills=5,
        rate=200,
        seed=7,
    )
    print(report.summary())
    assert report.missing == []
    assert report.recorded >= 400 and report.delivered >= report.recorded
    assert report.unrecorded_delivered <= report.device_kills
    assert report.integrity == "ok" and report.outbox_left == 0
    assert report.device_kills == 5
    if transport == "https":
        assert set(report.broker_faults) == {"5xx", "429", "timeout", "refused", "dropped"}
    else:
        assert report.mosquitto_kills == 5
    assert report.ok
