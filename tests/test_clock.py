"""The clock as a device meets it (issue 12, item 6): a Jetson boots with a stale wall clock
and NTP sets it years later; an operator sets it back a day; the device reboots. Leases,
retries and the outbox's 30-day expiry run on the lifetime clock (fr_core.clock): nothing
queued is lost to a jump, and no retry stalls. Real SQLite files; only the clocks are
driven by the test."""

from __future__ import annotations

import sqlite3

from fr_sqlite.store import SqliteStorage

from fr_core import FacialIdEvent, OutboxPolicy
from fr_core.clock import DeviceClock

DAY = 86400.0
STALE_BOOT = 1_577_836_800.0  # 2020-01-01: the clock a board without a battery boots with
NTP_TIME = 1_796_000_000.0  # late 2026


class JumpingClock(DeviceClock):
    def __init__(self, wall=STALE_BOOT, mono=100.0, boot="b00710000001", synced=False):
        self.w, self.m, self.boot, self.synced = wall, mono, boot, synced

    def wall(self):
        return self.w

    def mono(self):
        return self.m

    def boot_id(self):
        return self.boot

    def synchronised(self):
        return self.synced

    def run(self, seconds):  # time passes: both clocks move
        self.w += seconds
        self.m += seconds


def event(i):
    return FacialIdEvent.create(
        device_id="cam-1", user_id=f"EMP-{i}", distance=0.3, frames_tracked=5
    ).to_dict()


def store(path, clock, max_age=30 * DAY):
    s = SqliteStorage(str(path), policy=OutboxPolicy(max_age_seconds=max_age), clock=clock)
    s.initialize()
    return s


def test_ntp_setting_a_stale_clock_forward_expires_nothing(tmp_path):
    clock = JumpingClock()
    s = store(tmp_path / "o.db", clock)
    s.outbox_append_many([event(i) for i in range(10)])
    clock.run(600)
    clock.w, clock.synced = NTP_TIME, True  # six years forward in one step
    clock.run(10)
    assert len(s.outbox_claim(100, 60)) == 10  # before: all ten expired
    assert s.outbox_stats().expired_total == 0


def test_a_clock_set_back_a_day_stalls_no_retry_or_lease(tmp_path):
    clock = JumpingClock(wall=NTP_TIME, synced=True)
    s = store(tmp_path / "o.db", clock)
    s.outbox_append_many([event(i) for i in range(3)])
    ids = [it.event_id for it in s.outbox_claim(10, 5)]
    s.outbox_fail(ids, "broker down", retry_in=2.0)
    clock.w -= DAY  # set back a day
    assert s.outbox_claim(10, 5) == []  # not due yet: only 0 s passed
    clock.run(2.5)
    again = s.outbox_claim(10, 5)
    assert [it.event_id for it in again] == ids  # due after 2 s, not after a day
    clock.w -= DAY
    clock.run(6)  # the 5 s lease ended by the lifetime clock, whatever the wall says
    assert [it.event_id for it in s.outbox_claim(10, 5)] == ids


def test_ages_still_expire_on_the_lifetime_clock_and_survive_reboots(tmp_path):
    path = tmp_path / "o.db"
    clock = JumpingClock(wall=NTP_TIME, synced=True)
    s = store(path, clock, max_age=10 * DAY)
    s.outbox_append_many([event(0)])
    clock.run(4 * DAY)
    s.close()
    # a reboot: new boot id, the monotonic clock starts again near zero; 3 days switched off
    clock.boot, clock.m, clock.w = "b00720000002", 20.0, clock.w + 3 * DAY
    s = store(path, clock, max_age=10 * DAY)
    s.outbox_append_many([event(1)])
    clock.run(5 * DAY)  # event 0: 9 days of running, event 1: 5
    assert len(s.outbox_claim(10, 60)) == 2  # time switched off does not count
    s.outbox_release_claims()
    clock.run(2 * DAY)  # event 0 passes 10 days of running
    left = s.outbox_claim(10, 60)
    assert [it.payload["user_id"] for it in left] == ["EMP-1"]
    assert s.outbox_stats().expired_total == 1


def test_a_restart_within_a_boot_keeps_counting(tmp_path):
    path = tmp_path / "o.db"
    clock = JumpingClock(wall=NTP_TIME, synced=True)
    s = store(path, clock)
    ids = []
    s.outbox_append_many([event(0)])
    ids = [it.event_id for it in s.outbox_claim(10, 60)]
    s.outbox_fail(ids, "x", retry_in=100.0)
    clock.run(150)  # the process restarts in the same boot, 150 s later
    s = store(path, clock)
    assert [it.event_id for it in s.outbox_claim(10, 60)] == ids
    assert s.clock_status()["lifetime_seconds"] >= 150


def test_events_queued_by_schema_3_are_due_at_once_and_age_by_the_wall_clock(tmp_path):
    path = tmp_path / "o.db"
    clock = JumpingClock(wall=NTP_TIME, synced=True)
    s = store(path, clock, max_age=30 * DAY)
    s.outbox_append_many([event(0), event(1)])
    con = sqlite3.connect(path)  # as schema 3 left them: wall-clock times in the timeline
    con.execute(
        "UPDATE outbox SET next_attempt_at = ?, created_life = NULL, created_at = ?",
        (NTP_TIME + 3600, NTP_TIME - 40 * DAY),
    )
    con.execute("UPDATE schema_version SET version = 3")
    con.commit()
    con.close()
    clock.synced = False  # first: the wall clock is not trusted, nothing expires on it
    s = store(path, clock, max_age=30 * DAY)
    assert len(s.outbox_claim(10, 60)) == 2  # due at once (were "due in an hour of 2026")
    s.outbox_release_claims()
    clock.synced = True
    clock.run(10)
    assert s.outbox_claim(10, 60) == []  # 40 days old by a trusted wall clock: expired
    assert s.outbox_stats().expired_total == 2


def test_the_real_clock_answers():
    clock = DeviceClock()
    assert clock.boot_id() == clock.boot_id() and clock.boot_id()
    assert clock.synchronised() in (True, False, None)
    assert clock.mono() <= DeviceClock().mono()
