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
