"""A device network for tests: a network namespace joined to the host by a veth pair, so a
device process inside it reaches a broker only over that link, which the test can cut
(``partition``), restore, and slow down (``throttle``, a kernel token-bucket qdisc).

Needs root (or CAP_NET_ADMIN) and iproute2. Only the namespace's own addresses are used
(10.231.N.0/30); nothing outside the machine is touched, and everything is removed on exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def _run(argv: list[str], check: bool = False) -> subprocess.CompletedProcess[str]:
    """iproute2 with a fixed argv (no shell), by the binary's full path."""
    exe = shutil.which(argv[0]) or argv[0]
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [exe, *argv[1:]], capture_output=True, text=True, check=check
    )


def netns_problem() -> str | None:
    """Why device networks cannot be made here, or None."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (or CAP_NET_ADMIN)"
    probe = f"frprobe{os.getpid() % 100000}"
    made = _run(["ip", "netns", "add", probe])
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _run(["ip", "netns", "del", probe])
    return None


def _ip(*args: str) -> None:
    done = _run(["ip", *args])
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class DeviceNetwork:
    def __init__(self, index: int | None = None) -> None:
        n = (os.getpid() + (index or 0)) % 250 + 1
        self.ns = f"frdev{n}"
        self.host_if, self.dev_if = f"frh{n}", f"frd{n}"
        self.host_ip, self.device_ip = f"10.231.{n}.1", f"10.231.{n}.2"

    def __enter__(self) -> DeviceNetwork:
        self.close()  # leftovers of an interrupted run
        _ip("netns", "add", self.ns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.dev_if)
        _ip("link", "set", self.dev_if, "netns", self.ns)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip(
            "netns",
            "exec",
            self.ns,
            "ip",
            "addr",
            "add",
            f"{self.device_ip}/30",
            "dev",
            self.dev_if,
        )
        _ip("netns", "exec", self.ns, "ip", "link", "set", self.dev_if, "up")
        _ip("netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        return self

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the device's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def partition(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def throttle(self, rate: str = "256kbit") -> None:
        """Limit what the device sends (its side's egress) to ``rate``."""
        _run(
            self.command(
                [
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    self.dev_if,
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    "16kbit",
                    "latency",
                    "5s",
                ]
            ),
            check=True,
        )

    def unthrottle(self) -> None:
        _run(self.command(["tc", "qdisc", "del", "dev", self.dev_if, "root"]))

    def close(self) -> None:
        _run(["ip", "link", "del", self.host_if])
        _run(["ip", "netns", "del", self.ns])

    def __exit__(self, *exc: object) -> None:
        self.close()
