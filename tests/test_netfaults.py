"""Network faults between a device and its broker (issue 6, item 2): the device process runs
in its own network namespace, joined to the broker by a veth pair that the test cuts and
slows down. After a partition the device reconnects within its maximum backoff + 5 s of the
link coming back, and drains the backlog it kept while cut off.

Latency and packet loss cannot be put on the link itself: this machine's kernel has neither
the netem qdisc nor tc's random-drop action. A relay in user space (ImpairedRelay) gives the
device what TCP makes of them instead: late data and stalls. docs/reliability.md says so."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from fr_core import DatabaseManager
from fr_core.broker import ReferenceBroker
from fr_core.testing import require, soak, wait_for
from fr_core.testing.netns import DeviceNetwork, ImpairedRelay, netns_problem

KEY = "netfault-key-0123456789"
BACKOFF_MAX = 1.0  # the soak device's (fr_core.testing.soak)


@pytest.fixture
def net():
    problem = netns_problem()
    require(problem is None, problem or "")
    with DeviceNetwork() as n:
        yield n


def start_device(net, broker, workdir, total, rate, url=None):
    argv = soak.device_command(
        workdir / "faces.db",
        url or broker.url,
        broker.ca_path,
        workdir / "committed.txt",
        total,
        rate,
        ["connect_timeout=1", "read_timeout=3", "max_retries=0"],
    )
    return soak.start_device(net.command(argv), KEY)


def committed(workdir):
    path = workdir / "committed.txt"
    return path.read_text().split() if path.exists() else []


def finish(device, broker, workdir):
    try:
        out = device.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        device.kill()
        out = device.communicate()[0]
        pytest.fail(f"the device did not drain its outbox:\n{out[-2000:]}")
    assert device.returncode == 0 and "SOAK-DEVICE-DONE" in out, out[-2000:]
    ledger = {e["event_id"] for e in broker.store.ledger()}
    assert set(committed(workdir)) <= ledger
    with DatabaseManager(str(workdir / "faces.db")) as db:
        assert db.outbox_stats().depth == 0 and db.integrity_check() == "ok"
    return ledger


# `make soak` adds a partition of a minute
PARTITIONS = [3, 10] + ([60] if os.environ.get("FR_LONG_PARTITIONS") else [])


@pytest.mark.parametrize("seconds", PARTITIONS)
def test_a_partition_then_reconnection_within_backoff_plus_5s(net, tmp_path, seconds):
    with ReferenceBroker(tmp_path / "broker", api_key=KEY, host=net.host_ip) as broker:
        device = start_device(net, broker, tmp_path, total=150 + 20 * seconds, rate=20)
        assert wait_for(lambda: len(broker.store.ledger()) >= 10, timeout=30)
        net.partition()
        cut_at = time.monotonic()
        time.sleep(0.5)  # what was in flight settles
        delivered_before = len(broker.store.ledger())
        made_before = len(committed(tmp_path))
        time.sleep(seconds)
        # cut off: nothing arrives, the device keeps committing to its outbox
        assert len(broker.store.ledger()) == delivered_before
        assert len(committed(tmp_path)) > made_before + 10
        net.restore()
        back_at = time.monotonic()
        assert wait_for(
            lambda: len(broker.store.ledger()) > delivered_before, timeout=BACKOFF_MAX + 5 + 5
        )
        reconnect = time.monotonic() - back_at
        print(
            f"partition of {back_at - cut_at:.1f} s: first delivery {reconnect:.2f} s after "
            "the link came back"
        )
        assert reconnect <= BACKOFF_MAX + 5
        finish(device, broker, tmp_path)


def test_a_slow_link_still_delivers_everything(net, tmp_path):
    with ReferenceBroker(tmp_path / "broker", api_key=KEY, host=net.host_ip) as broker:
        net.throttle("128kbit")  # ~16 KB/s for ~50 KB/s of events: a backlog builds
        device = start_device(net, broker, tmp_path, total=150, rate=20)
        time.sleep(4)
        backlog = len(committed(tmp_path)) - len(broker.store.ledger())
        net.unthrottle()
        ledger = finish(device, broker, tmp_path)
        assert backlog > 5 and len(ledger) >= 150


def test_latency_and_lost_segments_still_deliver_everything(net, tmp_path):
    with ReferenceBroker(tmp_path / "broker", api_key=KEY, host=net.host_ip) as broker:
        relay = ImpairedRelay(
            (net.host_ip, 0), (net.host_ip, broker.port), delay=0.15, stall_probability=0.1
        )
        try:
            url = f"https://{net.host_ip}:{relay.address[1]}"  # the certificate names the IP
            t0 = time.monotonic()
            device = start_device(net, broker, tmp_path, total=100, rate=20, url=url)
            ledger = finish(device, broker, tmp_path)
            print(
                f"100 events over 150 ms each way and {relay.stalls} stalls of 0.2-1 s in "
                f"{relay.chunks} chunks: delivered in {time.monotonic() - t0:.1f} s"
            )
            assert len(ledger) >= 100 and relay.stalls > 0 and relay.chunks > 20
        finally:
            relay.close()
