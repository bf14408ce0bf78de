"""Corruption at start: SQLite's quick_check, and moving a damaged file aside (with its -wal
and -shm) so the device starts empty and resyncs instead of crash-looping."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

_CORRUPTION = ("file is not a database", "malformed", "database corrupt", "disk image")


def is_corruption(exc: BaseException) -> bool:
    text = f"{exc} {exc.__cause__ or ''}".lower()
    return any(marker in text for marker in _CORRUPTION)


def short(exc: BaseException) -> str:
    """The driver's message of an error, on one line, at most 300 characters."""
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig or exc).split())[:300]


def quick_check(engine: Engine) -> str | None:
    """SQLite's quick_check: None when the file is sound, else what it found."""
    if engine.dialect.name != "sqlite":
        return None
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("PRAGMA quick_check").fetchall()
    except SQLAlchemyError as exc:
        return short(exc)
    result = "; ".join(str(r[0]) for r in rows)
    return None if result == "ok" else result[:300]


def move_aside(file: Path, problem: str) -> dict[str, Any]:
    """Move a corrupt database (and its -wal/-shm) to ``NAME.corrupt-STAMP``, log what is
    lost, and return the record heartbeats report. No connection may be open on it."""
    unsent: int | None = None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as con:
            unsent = int(con.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.Error:
        pass
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = file.with_name(f"{file.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(file) + suffix)
        if part.exists():
            os.replace(part, Path(str(aside) + suffix))
    lost = (
        f"{unsent} unsent event(s) in it are LOST"
        if unsent
        else "no unsent event could be read from it"
        if unsent is None
        else "it held no unsent event"
    )
    log.error(
        "database %s is corrupt (%s): moved to %s and replaced by an empty one; %s; "
        "the enrolments come back with a full resync at the next sync",
        file,
        problem,
        aside,
        lost,
    )
    return {"moved_to": str(aside), "problem": problem, "unsent_lost": unsent}
