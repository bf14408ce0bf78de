"""The soak: a device process that is SIGKILLed and restarted at random points while its
broker fails in every way it can, and the check that no committed event was lost.

``python -m fr_core.testing.soak device ...`` is the device: it commits events to its outbox
(recording each id in a side file after the commit), an IoTClient drains them, and it exits
0 once it has committed ``--total`` events and its outbox is empty. :func:`run_soak` is the
orchestration used by ``make soak`` and, shortened, by ``make test`` (tests/test_soak.py).

The verdict: every id the device recorded as committed is in the broker's ledger (events
committed in the instant before a SIGKILL, before their id was recorded, may be in the
ledger unrecorded: at most one per kill); the ledger holds each event once (a resend is
counted as a delivery of the same event_id, never a second event); the device database
passes integrity_check; its outbox is empty.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fr_core.broker.https import ReferenceBroker
from fr_core.broker.mqtt import MqttBroker
from fr_core.delivery.client import IoTClient, IoTClientConfig
from fr_core.events import FacialIdEvent
from fr_core.storage import DatabaseManager

DEVICE_ID = "cam-soak"


# --- the device process ----------------------------------------------------------------------


def device_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="soak device")
    p.add_argument("--db", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--committed", required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--transport-option", action="append", default=[])
    a = p.parse_args(argv)
    options: dict[str, Any] = {"ca_bundle": a.ca}
    for item in a.transport_option:
        k, _, v = item.partition("=")
        options[k] = json.loads(v)
    db = DatabaseManager(a.db)
    client = IoTClient(
        IoTClientConfig(
            device_id=DEVICE_ID,
            broker_url=a.url,  # the API key comes from $FR_API_KEY
            transport_options=options,
            backoff_min_seconds=0.05,
            backoff_max_seconds=1.0,
            batch_size=50,
        ),
        db=db,
    )
    client.start()
    image = base64.b64encode(b"\xff\xd8" + os.urandom(2000)).decode()
    path = Path(a.committed)
    done = len(path.read_text().split()) if path.exists() else 0
    with open(path, "a") as record:
        while done < a.total:
            event = FacialIdEvent.create(
                device_id=DEVICE_ID, user_id=f"EMP-{done:06d}", distance=0.3, frames_tracked=5
            ).to_dict()
            event["image"] = image
            db.outbox_append(event)  # committed (synchronous=FULL) when this returns
            record.write(event["event_id"] + "\n")
            record.flush()
            done += 1
            if client.worker is not None:
                client.worker.wake()
            time.sleep(1.0 / a.rate)
    while db.outbox_stats().depth:
        time.sleep(0.05)
    client.stop()
    db.close()
    print("SOAK-DEVICE-DONE", flush=True)
    return 0


def device_command(
    db: Path,
    url: str,
    ca: Path,
    committed: Path,
    total: int,
    rate: float,
    transport_options: list[str],
) -> list[str]:
    """The argv of a soak device (:func:`device_main`); options as ``name=json``."""
    cmd = [
        sys.executable,
        "-m",
        "fr_core.testing.soak",
        "device",
        "--db",
        str(db),
        "--url",
        url,
        "--ca",
        str(ca),
        "--committed",
        str(committed),
        "--total",
        str(total),
        "--rate",
        str(rate),
    ]
    for option in transport_options:
        cmd += ["--transport-option", option]
    return cmd


def start_device(argv: list[str], api_key: str) -> subprocess.Popen[str]:
    """Start a device from ``argv``, its API key in the environment (never on the command
    line), output captured."""
    return subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        argv,
        env={**os.environ, "FR_API_KEY": api_key},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# --- the orchestration -----------------------------------------------------------------------


@dataclass
class SoakReport:
    transport: str
    committed: int = 0
    recorded: int = 0
    delivered: int = 0
    missing: list[str] = field(default_factory=list)
    unrecorded_delivered: int = 0
    duplicate_deliveries: int = 0
    device_kills: int = 0
    mosquitto_kills: int = 0
    broker_faults: dict[str, int] = field(default_factory=dict)
    integrity: str = ""
    outbox_left: int = -1
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.missing
            and self.unrecorded_delivered <= self.device_kills
            and self.integrity == "ok"
            and self.outbox_left == 0
        )

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.broker_faults.items())) or "none"
        return (
            f"soak over {self.transport}: {self.recorded} events committed (+"
            f"{self.unrecorded_delivered} committed just before a kill), {self.delivered} in the "
            f"broker's ledger, {len(self.missing)} missing, {self.duplicate_deliveries} "
            f"duplicate deliveries (same event_id); {self.device_kills} device SIGKILLs, "
            f"{self.mosquitto_kills} mosquitto SIGKILLs, broker faults: {faults}; "
            f"integrity_check {self.integrity!r}, outbox left {self.outbox_left}; "
            f"{self.seconds:.0f} s"
        )

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2)


def run_soak(
    transport: str,
    workdir: Path,
    *,
    events: int = 5000,
    device_kills: int = 20,
    broker_faults: int = 10,
    mosquitto_kills: int = 20,
    rate: float = 150.0,
    seed: int = 1,
    log: Any = print,
) -> SoakReport:
    rng = random.Random(seed)  # noqa: S311 (fault timing, not secrets)
    workdir.mkdir(parents=True, exist_ok=True)
    key = f"soak-{os.urandom(8).hex()}"
    report = SoakReport(transport)
    t0 = time.monotonic()
    db_path = workdir / "device" / "faces.db"
    committed = workdir / "committed.txt"
    broker: Any
    if transport == "https":
        broker = ReferenceBroker(workdir / "broker", api_key=key).start()
        options = ["read_timeout=2", "connect_timeout=2", "max_retries=0"]
    elif transport == "mqtt":
        broker = MqttBroker(workdir / "mqtt", {DEVICE_ID: key}).start()
        options = ["publish_timeout=5", "ack_timeout=5", "connect_timeout=3"]
    else:
        raise ValueError(f"transport must be https or mqtt, not {transport!r}")

    def spawn() -> subprocess.Popen[str]:
        return start_device(
            device_command(db_path, broker.url, broker.ca_path, committed, events, rate, options),
            key,
        )

    # faults to spread over the run, in random order
    plan = ["device"] * device_kills
    if transport == "https":
        kinds = ["5xx", "429", "timeout", "refused", "dropped"]
        plan += [kinds[i % len(kinds)] for i in range(broker_faults)]
    else:
        plan += ["mosquitto"] * mosquitto_kills
    rng.shuffle(plan)
    device = spawn()
    try:
        for action in plan:
            time.sleep(rng.uniform(0.3, 1.2))
            if action == "device":
                device.send_signal(signal.SIGKILL)
                device.wait()
                report.device_kills += 1
                device = spawn()
            elif action == "mosquitto":
                broker.mosquitto.kill()
                report.mosquitto_kills += 1
                time.sleep(rng.uniform(0.1, 1.0))
                broker.mosquitto.start()
            else:
                _https_fault(broker, action, rng)
                report.broker_faults[action] = report.broker_faults.get(action, 0) + 1
        # no more faults: the device finishes committing and drains its outbox
        deadline = time.monotonic() + max(120.0, events / rate * 3)
        while device.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if device.poll() is None:
            device.kill()
            out = device.communicate()[0]
            raise RuntimeError(f"the device did not finish its soak:\n{out[-3000:]}")
        out = device.communicate()[0]
        if device.returncode != 0 or "SOAK-DEVICE-DONE" not in out:
            raise RuntimeError(f"the device failed (exit {device.returncode}):\n{out[-3000:]}")
        recorded = committed.read_text().split()
        ledger = broker.store.ledger()
        delivered = {e["event_id"]: e for e in ledger}
        report.recorded = len(recorded)
        report.committed = len(set(recorded) | set(delivered))
        report.delivered = len(delivered)
        report.missing = sorted(set(recorded) - set(delivered))
        report.unrecorded_delivered = len(set(delivered) - set(recorded))
        report.duplicate_deliveries = sum(int(e.get("deliveries", 1)) - 1 for e in ledger)
        with DatabaseManager(str(db_path)) as db:
            report.integrity = db.integrity_check()
            report.outbox_left = db.outbox_stats().depth
    finally:
        if device.poll() is None:
            device.kill()
            device.wait()
        broker.stop()
    report.seconds = time.monotonic() - t0
    log(report.summary())
    return report


def _https_fault(broker: Any, kind: str, rng: random.Random) -> None:
    if kind == "5xx":
        broker.faults.add(status=rng.choice([500, 502, 503]), count=rng.randint(1, 3))
    elif kind == "429":
        broker.faults.add(status=429, retry_after=1, count=1)
    elif kind == "timeout":
        broker.faults.add(delay=3.0, count=1)  # past the device's 2 s read timeout
    elif kind == "dropped":
        broker.faults.add(drop=True, count=rng.randint(1, 2))
    elif kind == "refused":
        broker.stop()  # nothing listens: connections are refused
        time.sleep(rng.uniform(0.3, 1.5))
        broker.start()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "device":
        return device_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m fr_core.testing.soak")
    p.add_argument("--transport", choices=["https", "mqtt", "both"], default="both")
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--device-kills", type=int, default=20)
    p.add_argument("--broker-faults", type=int, default=10)
    p.add_argument("--mosquitto-kills", type=int, default=20)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--report", type=Path, help="write the reports as JSON here")
    a = p.parse_args(argv)
    reports = []
    for name in ["https", "mqtt"] if a.transport == "both" else [a.transport]:
        reports.append(
            run_soak(
                name,
                a.workdir / name,
                events=a.events,
                device_kills=a.device_kills,
                broker_faults=a.broker_faults,
                mosquitto_kills=a.mosquitto_kills,
            )
        )
    if a.report:
        a.report.write_text("[" + ",\n".join(r.as_json() for r in reports) + "]\n")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
