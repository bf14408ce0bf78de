"""Time as a device meets it: a wall clock that may be years off at boot and jump when NTP
sets it, a monotonic clock that never jumps but restarts at every boot, and the kernel's word
on whether the wall clock is synchronised.

The outbox measures leases, retries and ages on a **lifetime clock** built from these (see
:class:`fr_sqlite.store.SqliteStorage`): monotonic within a boot, carried across reboots by
the boot id, never moved by the wall clock. A Jetson that boots in 2020 and gets 2026 from
NTP an hour later expires nothing; a clock set back a day stalls no retry.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_TIME_ERROR = 5  # adjtimex(2): "the system clock is not synchronized to a reliable server"


class DeviceClock:
    """The real clocks. Tests inject a subclass that jumps."""

    def wall(self) -> float:
        return time.time()

    def mono(self) -> float:
        return time.monotonic()

    def boot_id(self) -> str:
        """This boot's id (Linux); a per-process id elsewhere (every start a new boot)."""
        return _boot_id()

    def synchronised(self) -> bool | None:
        """Whether the kernel holds the wall clock synchronised (NTP, PTP, GPS); None when
        it cannot say (not Linux)."""
        return _synchronised()


@cache
def _boot_id() -> str:
    try:
        return BOOT_ID_PATH.read_text().strip()
    except OSError:
        return uuid.uuid4().hex


@cache
def _adjtimex() -> Any:
    """libc's adjtimex, looked up once: find_library runs ldconfig in a subprocess, and the
    outbox asks whether the clock is synchronised every few seconds."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None


def _synchronised() -> bool | None:
    adjtimex = _adjtimex()
    if adjtimex is None:
        return None
    buf = ctypes.create_string_buffer(512)  # struct timex, modes 0: read only
    state = adjtimex(buf)
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)


def boot_number(boot_id: str) -> int:
    """A boot id as an integer that fits a database integer column exactly."""
    digits = "".join(c for c in boot_id if c in "0123456789abcdefABCDEF")[:12]
    return int(digits or "0", 16)
