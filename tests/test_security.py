"""Security promises as tests (issue 6, item 5). Others live beside the code they check and
are listed in docs/reliability.md: 0600 files (test_storage), no names in production and no
local enrolment there (test_storage, test_enroll), a deleted employee's embedding bytes gone
from the file after the next sync (test_sync), secrets masked in config errors and logs
(test_config, test_logging), and every test's output searched for the suite's secrets
(tests/conftest.py; checked below)."""

from __future__ import annotations

import re

import pytest

from fr_core import ConfigError
from fr_core.interfaces import ComponentKind
from fr_core.plugins import build_registry

from .conftest import REPO

pytest_plugins = ["pytester"]

PRODUCT = [REPO / "fr_core", REPO / "plugins", REPO / "hal"]
# What switches certificate checking off in requests, ssl, paho and urllib3.
TLS_OFF = re.compile(
    r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|tls_insecure_set\(\s*True"
    r"|cert_reqs\s*=\s*['\"]?CERT_NONE|InsecureRequestWarning"
)


def test_no_product_code_switches_tls_verification_off():
    hits = []
    for root in PRODUCT:
        for path in root.rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if TLS_OFF.search(line):
                    hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hits == []


@pytest.mark.parametrize("transport", ["https", "mqtt"])
@pytest.mark.parametrize(
    "option",
    [
        {"verify": False},
        {"insecure": True},
        {"tls_insecure": True},
        {"cert_reqs": "none"},
        {"check_hostname": False},
    ],
)
def test_no_transport_option_turns_verification_off(transport, option):
    """There is no such option: every spelling is an unknown key, refused by name."""
    reg = build_registry()
    opts = {
        "broker_url": "https://b.example" if transport == "https" else "mqtts://b.example",
        "device_id": "cam-001",
        **option,
    }
    with pytest.raises(ConfigError, match=f"{next(iter(option))}.*unknown key"):
        reg.validate_options(ComponentKind.TRANSPORT, transport, opts, path="transport")


@pytest.mark.parametrize("url", ["http://b.example", "mqtt://b.example"])
def test_plain_text_brokers_need_the_named_insecure_option(url):
    reg = build_registry()
    name = "https" if url.startswith("http") else "mqtt"
    opts = {"broker_url": url, "device_id": "cam-001", "api_key": "k" * 16}
    with pytest.raises(ConfigError, match="allow_insecure: true"):
        reg.create(ComponentKind.TRANSPORT, name, opts)


def test_the_secret_scan_fails_a_session_that_leaks(pytester):
    """The suite-wide scan in tests/conftest.py can fail: a test that logs its API key, or
    prints it, fails the session and is named with the constant, never the value."""
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(
        test_leaky="""
        import logging
        DEVICE_API_KEY = "leaky-value-0123456789"
        SAFE_TOKEN = "never-shown-9876543210"

        def test_logs_it():
            logging.getLogger("x").warning("connecting with %s", DEVICE_API_KEY)

        def test_prints_it():
            print("token", SAFE_TOKEN)

        def test_clean():
            logging.getLogger("x").warning("connecting with ***")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "test_leaky.py::test_logs_it: test_leaky.DEVICE_API_KEY" in out
    assert "test_leaky.py::test_prints_it: test_leaky.SAFE_TOKEN" in out
    assert "test_clean" not in out.split("SECRETS IN TEST OUTPUT")[1]
    assert "leaky-value-0123456789" not in out.split("SECRETS IN TEST OUTPUT")[1]
