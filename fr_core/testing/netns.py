"""A device network for tests: a network namespace joined to the host by a veth pair, so a
device process inside it reaches a broker only over that link, which the test can cut
(``partition``), restore, and slow down (``throttle``, a kernel token-bucket qdisc).

Needs root (or CAP_NET_ADMIN) and iproute2. Only the namespace's own addresses are used
(10.231.N.0/30); nothing outside the machine is touched, and everything is removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from typing import Any


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


class ImpairedRelay:
    """A TCP relay that delays what it forwards, in both directions, and now and then
    holds a chunk back as a lost segment's retransmission would.

    This machine's kernel has no netem qdisc, so latency and loss cannot be put on the veth
    link itself; the relay gives the device what TCP would make of them (data arriving late
    and in stalls), not the packet-level behaviour. ``listen`` on the host side of a
    :class:`DeviceNetwork`, ``target`` the broker.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int],
        *,
        delay: float = 0.1,
        stall_probability: float = 0.05,
        stall_seconds: tuple[float, float] = (0.2, 1.0),
        seed: int = 1,
    ) -> None:
        self.target, self.delay = target, delay
        self.stall_probability, self.stall_seconds = stall_probability, stall_seconds
        self._rng = random.Random(seed)  # noqa: S311 (fault timing, not secrets)
        self._lock = threading.Lock()
        self.stalls = self.chunks = self.connections = 0
        self._server = socket.create_server(listen)
        self.address = self._server.getsockname()[:2]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self._server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                down.close()
                continue
            self.connections += 1
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                with self._lock:
                    self.chunks += 1
                    stall = self._rng.random() < self.stall_probability
                    extra = self._rng.uniform(*self.stall_seconds) if stall else 0.0
                    self.stalls += int(stall)
                time.sleep(self.delay + extra)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(2)  # SHUT_RDWR

    def close(self) -> None:
        self._closed = True
        self._server.close()
