"""Log output: text or JSON lines, and secrets masked wherever they would appear."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fr_core.logsetup import register_secret, setup_logging


@pytest.fixture
def stream():
    buf = io.StringIO()
    handler = setup_logging("DEBUG", "text", stream=buf)
    yield buf
    logging.getLogger().removeHandler(handler)


def test_registered_secrets_are_masked_in_messages_and_tracebacks(stream):
    register_secret("k3y-that-must-not-leak")
    log = logging.getLogger("fr_core.test")
    log.info("connecting with %s", "k3y-that-must-not-leak")
    try:
        raise RuntimeError("auth failed for k3y-that-must-not-leak")
    except RuntimeError:
        log.exception("failure")
    text = stream.getvalue()
    assert "k3y-that-must-not-leak" not in text
    assert text.count("***") >= 2 and "RuntimeError: auth failed for ***" in text


def test_short_values_are_not_treated_as_secrets(stream):
    register_secret("ab")
    logging.getLogger("fr_core.test").info("about absent")
    assert "about absent" in stream.getvalue()


def test_json_lines():
    buf = io.StringIO()
    handler = setup_logging("INFO", "json", stream=buf)
    try:
        logging.getLogger("fr_core.x").warning("hello %s", "world")
        logging.getLogger("fr_core.x").debug("hidden")
    finally:
        logging.getLogger().removeHandler(handler)
    (line,) = buf.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "hello world" and record["level"] == "WARNING"
    assert record["logger"] == "fr_core.x" and record["time"]


# picked up by the suite-wide secret scan of tests/conftest.py as well
JSON_API_KEY = 'j50n-k3y"with\\quote-and-ü'


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_never_reach_either_format(fmt, capsys):
    """Messages, arguments, extra fields and tracebacks: the JSON formatter formats exc_info
    itself, so redaction happens on the finished line; a secret JSON would escape is masked
    in its escaped form too. The lines go to the real stderr, which the suite scans."""
    import sys

    register_secret(JSON_API_KEY)
    root = logging.getLogger()
    others = list(root.handlers)  # pytest's capture formats records its own way: not ours
    for h in others:
        root.removeHandler(h)
    handler = setup_logging("INFO", fmt, stream=sys.stderr)
    log = logging.getLogger("fr_core.test")
    try:
        log.info("connecting with %s", JSON_API_KEY)
        log.warning("plain " + JSON_API_KEY)
        log.warning("extra field", extra={"auth": JSON_API_KEY, "nested": {"k": JSON_API_KEY}})
        try:
            raise RuntimeError(f"auth failed for {JSON_API_KEY}")
        except RuntimeError:
            log.exception("failure")
    finally:
        root.removeHandler(handler)
        for h in others:
            root.addHandler(h)
    err = capsys.readouterr().err
    escaped = json.dumps(JSON_API_KEY)[1:-1]
    assert JSON_API_KEY not in err and escaped not in err and "j50n-k3y" not in err
    assert err.count("***") >= (5 if fmt == "json" else 3)
    assert "RuntimeError: auth failed for ***" in err
    if fmt == "json":
        records = [json.loads(line) for line in err.splitlines()]
        assert len(records) == 4 and records[2]["auth"] == "***"
        assert "exc_info" in records[3] and "***" in records[3]["exc_info"]
