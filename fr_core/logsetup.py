"""Logging set-up: human-readable lines by default, JSON lines on request.

Secrets are masked twice: config models keep them in ``SecretStr`` (so they never reach a log
by accident), and the formatters of both formats replace any registered secret value that
still shows up in the finished line with ``***``: message, arguments, extra fields and
tracebacks alike, and in the JSON-escaped form the JSON formatter writes it in.
:class:`SecretFilter` also cleans the record itself, for handlers added by others.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every log record from now on (ignored if shorter than 4 chars)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret masked, as written and as JSON escapes it."""
    for s in sorted(_secrets, key=len, reverse=True):
        for form in {s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1]}:
            if form in text:
                text = text.replace(form, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """Text lines with secrets masked in the finished line (tracebacks included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines with secrets masked in the finished line: the JSON formatter formats
    ``exc_info`` itself and serialises extra fields, so the record alone cannot be trusted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class SecretFilter(logging.Filter):
    """Replaces registered secrets in the message and arguments of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            msg = record.getMessage()
            clean = redact(msg)
            if clean != msg:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def setup_logging(
    level: str = "INFO",
    fmt: Literal["text", "json"] = "text",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Configure the root logger once; calling again replaces the fr-edge handler."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_fr_edge", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._fr_edge = True  # type: ignore[attr-defined]
    if fmt == "json":
        handler.setFormatter(
            RedactingJsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(SecretFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
