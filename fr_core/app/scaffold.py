"""``fr-edge plugin new transport NAME``: a transport plugin package, ready to fill in.

It writes a distribution with its entry point (``fr_core`` group), a config model on
:class:`fr_core.delivery.transports.BrokerConnectionConfig`, a transport whose five methods say what
they must do and raise ``NotImplementedError`` until they do, its registration (with the URL
schemes it serves), and the conformance suite already wired to it: ``pip install -e .`` then
``pytest`` runs the nine conformance tests against it, and they pass once the transport
works (docs/writing_plugins.md).
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from pathlib import Path
from string import Template

from fr_core.config import BROKER_SCHEMES

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")

_PYPROJECT = Template("""[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "fr-edge-${name}-transport"
version = "0.1.0"
description = "fr-edge transport plugin: ${name}"
requires-python = ">=3.10"
dependencies = ["fr-edge"]

[project.optional-dependencies]
test = ["pytest>=8"]

# fr-edge finds plugins through this entry point group; the name is the plugin's name
[project.entry-points.fr_core]
fr_${name} = "fr_${name}"

[tool.setuptools]
packages = ["fr_${name}"]
""")

_README = Template("""# fr-edge-${name}-transport

An fr-edge transport plugin. Install it next to fr-edge and choose it in the device config:

```yaml
broker_url: ${scheme}://broker.example:1234
transport: ${name}          # or leave it out: ${scheme}:// picks it
```

Develop:

```sh
pip install -e '.[test]'
pytest                      # the fr-edge transport conformance suite, against this plugin
fr-edge plugins             # lists ${name} once installed
```
""")

_MODULE = Template('''"""The ``${name}`` transport for fr-edge (from ``fr-edge plugin new``).

Fill in the five methods; tests/test_conformance.py runs the conformance suite against it.
Contract and exceptions: fr-edge's docs/writing_plugins.md ("The transport contract").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fr_core import hookimpl
from fr_core.interfaces import SendResult
from fr_core.delivery.transports import BrokerConnectionConfig


class ${cls}Config(BrokerConnectionConfig):
    """Options of the ``${name}`` transport: broker_url, device_id, api_key, allow_insecure and
    the TLS files come from BrokerConnectionConfig (defaulting to the top-level config); add
    your protocol's own options here, secrets as pydantic.SecretStr."""

    timeout: float = 10.0


class ${cls}Transport:
    def __init__(
        self,
        config: ${cls}Config,
        device_id: str,
        broker_url: str,
        api_key: str | None,
        allow_insecure: bool,
    ) -> None:
        self.config = config
        self.device_id, self.broker_url = device_id, broker_url
        self._api_key, self.allow_insecure = api_key, allow_insecure

    def start(self) -> None:
        """Connect (or check the broker can be reached). Raise TransportAuthError for bad
        credentials and TransportTLSError for an untrusted certificate (never put the key in
        a message); TransportUnavailable when the broker cannot be reached (the device starts
        anyway and retries)."""
        raise NotImplementedError("${name}: start")

    def stop(self, timeout: float = 5.0) -> None:
        """Close connections; must be safe to call twice, and after a failed start."""

    def send_events(self, events: Sequence[Mapping[str, Any]]) -> SendResult:
        """Deliver a batch (JSON-ready dicts, each with its event_id). Return
        SendResult(acknowledged=[ids stored or already stored], rejected={id: reason} for
        those the broker can never accept). Raise TransportUnavailable (with retry_after
        where the broker said so) for a failure worth retrying: the outbox keeps the batch."""
        raise NotImplementedError("${name}: send_events")

    def send_heartbeat(self, payload: Mapping[str, Any]) -> None:
        """Send one heartbeat; failures may raise TransportUnavailable (it is not retried)."""
        raise NotImplementedError("${name}: send_heartbeat")

    def fetch_changes(
        self, since_version: int, limit: int, cursor: str | None = None
    ) -> Mapping[str, Any]:
        """One enrolment change page after ``since_version`` (fr-edge's docs/broker-api.md);
        the device validates it whole before writing anything."""
        raise NotImplementedError("${name}: fetch_changes")


@hookimpl
def fr_register_transports(register: Any) -> None:
    def factory(cfg: ${cls}Config, ctx: Any) -> ${cls}Transport:
        t = cfg.target(ctx, "${name}")
        return ${cls}Transport(cfg, t.device_id, t.broker_url, t.api_key, t.allow_insecure)

    register(
        "${name}",
        factory,
        ${cls}Config,
        url_schemes={"${scheme}": True},  # add a plain scheme as False if it has one
        description="${name} transport",
    )
''')

_TEST = Template('''"""The fr-edge transport conformance suite, run against the ${name} transport.

The ``broker`` fixture is fr-edge's reference broker over HTTPS. A transport for another
protocol overrides it with a harness: your server, plus a bridge that stores what arrives in
the reference broker's store (fr_core.broker.BrokerStore), offering ``store``
(``enrol``, ``remove``, ``ledger()``, ``heartbeats()``, ``live()``), ``url``, ``ca_path``,
``restart()`` and ``inject_failures(count)`` (docs/writing_plugins.md, "The harness
contract"). Until you add one, these tests run against HTTPS and pass only for a transport
that speaks the reference broker's HTTPS API. The worked example of a harness for a protocol
of its own is tests/examples/jsontcp in fr-edge's repository (a TLS server bridging into
BrokerStore); fr_core.broker.MqttBroker is the one for MQTT.
"""

import pytest

from fr_core.testing.conformance import TransportConformance
from fr_${name} import ${cls}Config, ${cls}Transport


class Test${cls}Conformance(TransportConformance):
    @pytest.fixture
    def make_transport(self, broker):
        def make(api_key=TransportConformance.API_KEY, ca_bundle=None):
            config = ${cls}Config(ca_bundle=ca_bundle or broker.ca_path)
            return ${cls}Transport(config, self.DEVICE_ID, broker.url, api_key, False)

        return make
''')


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def new_transport(name: str, folder: Path, scheme: str | None = None) -> list[Path]:
    """Write the package ``fr-edge-<name>-transport`` under ``folder``; returns the files."""
    if not NAME_RE.match(name) or keyword.iskeyword(name):
        raise ValueError(
            f"plugin name {name!r}: lowercase letters, digits and _, starting with a letter "
            "(it becomes the package fr_<name>)"
        )
    if importlib.util.find_spec(f"fr_{name}") is not None:
        raise ValueError(
            f"plugin name {name!r}: a package fr_{name} is already installed (fr-edge's own "
            "plugins use fr_https, fr_mqtt, fr_cpu...); choose another name"
        )
    scheme = scheme or name.replace("_", "-")
    if not re.fullmatch(r"[a-z][a-z0-9+.-]{0,31}", scheme):
        raise ValueError(f"URL scheme {scheme!r}: lowercase letters, digits, + . -")
    if scheme in BROKER_SCHEMES:
        raise ValueError(f"URL scheme {scheme!r} is fr-edge's own ({', '.join(BROKER_SCHEMES)})")
    root = Path(folder) / f"fr-edge-{name.replace('_', '-')}-transport"
    if root.exists():
        raise FileExistsError(f"{root} already exists: not overwritten")
    values = {"name": name, "cls": class_name(name), "scheme": scheme}
    files = {
        root / "pyproject.toml": _PYPROJECT,
        root / "README.md": _README,
        root / f"fr_{name}" / "__init__.py": _MODULE,
        root / "tests" / "test_conformance.py": _TEST,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.substitute(values), encoding="utf-8")
    return list(files)
