"""Config loading and validation: YAML and JSON, precise errors, env secrets, plugin blocks."""

from __future__ import annotations

import contextlib
import json
import string

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fr_core import ConfigError, hookimpl
from fr_core.config import (
    AppConfig,
    config_from_mapping,
    default_config,
    load_config,
    validate_components,
)
from fr_core.plugins import build_registry

from .conftest import REPO

MINIMAL = {"device_id": "cam-001", "broker_url": "https://broker.example.com"}
SPEC_KEYS = [
    "device_id",
    "broker_url",
    "api_key",
    "confirmation_frames",
    "consistency_threshold",
    "cooldown_seconds",
    "dev_mode",
    "db_path",
    "sync_interval_minutes",
]


def problems_of(data, env=None):
    with pytest.raises(ConfigError) as exc:
        config_from_mapping(data, env=env or {})
    return dict(exc.value.problems), str(exc.value)


def test_example_config_is_complete_and_valid(monkeypatch):
    monkeypatch.delenv("FR_API_KEY", raising=False)
    data = json.loads((REPO / "config_example.json").read_text())
    for key in SPEC_KEYS:
        assert key in data, f"config_example.json lacks the spec key {key}"
    for key in AppConfig.model_fields:
        assert key in data or key in ("detector", "embedder", "matcher", "transport", "storage"), (
            key
        )
    cfg = load_config(REPO / "config_example.json")
    validate_components(cfg, build_registry())
    assert cfg.confirmation_frames == 5 and cfg.consistency_threshold == 0.8
    assert cfg.cooldown_seconds == 30 and cfg.dev_mode is False and cfg.api_key is None


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_yaml_and_json_give_the_same_config(tmp_path, suffix):
    data = {**MINIMAL, "confirmation_frames": 7, "camera": {"plugin": "sim", "fps": 15}}
    path = tmp_path / f"c{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    cfg = load_config(path, env={})
    assert cfg.confirmation_frames == 7
    assert cfg.camera.plugin == "sim" and cfg.camera.options == {"fps": 15}


def test_every_spec_key_works():
    cfg = config_from_mapping(
        {
            "device_id": "cam-9",
            "broker_url": "https://b.example",
            "api_key": "k-123456",
            "confirmation_frames": 3,
            "consistency_threshold": 0.6,
            "cooldown_seconds": 10,
            "dev_mode": True,
            "db_path": "/tmp/x.db",
            "sync_interval_minutes": 2,
        },
        env={},
    )
    assert (cfg.device_id, cfg.confirmation_frames, cfg.consistency_threshold) == ("cam-9", 3, 0.6)
    assert (cfg.cooldown_seconds, cfg.dev_mode, cfg.db_path) == (10, True, "/tmp/x.db")
    assert cfg.sync_interval_minutes == 2 and cfg.api_key_value() == "k-123456"


def test_errors_give_path_value_and_what_is_allowed():
    problems, text = problems_of(
        {
            **MINIMAL,
            "consistency_threshold": 1.5,
            "confirmation_frames": "many",
            "logging": {"level": "LOUD"},
            "cooldown": 3,
        }
    )
    assert problems["consistency_threshold"] == "Input should be less than or equal to 1 (got 1.5)"
    assert "valid integer" in problems["confirmation_frames"]
    assert "'many'" in problems["confirmation_frames"]
    assert "'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in problems["logging.level"]
    assert problems["cooldown"].startswith("unknown key; allowed keys here: device_id,")
    assert "cooldown_seconds" in problems["cooldown"]
    assert text.count("\n") == 4  # a header line and one line per problem


def test_missing_required_keys():
    problems, _ = problems_of({})
    assert problems == {
        "device_id": "required key is missing",
        "broker_url": "required key is missing",
    }


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://broker", "unencrypted http:// is refused"),
        ("mqtt://broker", "unencrypted mqtt:// is refused"),
        ("://broker", "must be an absolute URL with a host and a scheme"),
        ("broker.example.com", "must be an absolute URL with a host and a scheme"),
        ("https://user:pw@broker", "must not contain credentials"),
        ("https://broker/?key=abc", "must not contain a query string"),
    ],
)
def test_broker_url_rules(url, fragment):
    problems, _ = problems_of({**MINIMAL, "broker_url": url})
    assert fragment in problems["broker_url"]


def test_broker_url_schemes_come_from_the_installed_transports(fr_add_plugin):
    """A scheme no transport declares is refused with the list of those that are; a
    transport plugin declaring rediss:// makes it valid (and picked by the client), and a
    declared unencrypted one needs allow_insecure."""
    from fr_core.config import validate_components
    from fr_core.errors import ConfigError
    from fr_core.plugins import build_registry

    cfg = config_from_mapping({**MINIMAL, "broker_url": "rediss://cache.example:6380"}, env={})
    with pytest.raises(ConfigError, match=r"no installed transport serves rediss:// \(schemes:"):
        validate_components(cfg, build_registry())

    class Redis:
        @hookimpl
        def fr_register_transports(self, register):
            register(
                "redis_streams",
                lambda c, ctx: None,
                None,
                url_schemes={"rediss": True, "redis": False},
            )

    registry = fr_add_plugin(Redis(), "redis-plugin")
    assert registry.scheme_transport("rediss") == ("redis_streams", True)
    validate_components(cfg, registry)  # no error
    plain = config_from_mapping({**MINIMAL, "broker_url": "redis://cache.example"}, env={})
    with pytest.raises(ConfigError, match=r"redis:// \(transport 'redis_streams'\) is unencrypted"):
        validate_components(plain, registry)
    assert build_registry().scheme_transport("mqtts") == ("mqtt", True)


def test_insecure_url_needs_the_explicit_option():
    cfg = config_from_mapping(
        {**MINIMAL, "broker_url": "http://127.0.0.1:8080/", "allow_insecure": True}, env={}
    )
    assert cfg.broker_url == "http://127.0.0.1:8080"


def test_secrets_come_from_the_environment_and_never_show():
    cfg = config_from_mapping(
        {**MINIMAL, "api_key": "${BROKER_KEY}"}, env={"BROKER_KEY": "s3cr3t-v4lue"}
    )
    assert cfg.api_key_value() == "s3cr3t-v4lue"
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.model_dump())
    fallback = config_from_mapping(MINIMAL, env={"FR_API_KEY": "from-env-123"})
    assert fallback.api_key_value() == "from-env-123"
    problems, text = problems_of({**MINIMAL, "api_key": 12345678, "mqtt_password": "hunter2-x"})
    assert "12345678" not in text and "hunter2" not in text
    assert "'***'" in problems["api_key"]


def test_env_interpolation_default_and_missing():
    cfg = config_from_mapping({**MINIMAL, "db_path": "${DATA:-/var/lib/fr}/faces.db"}, env={})
    assert cfg.db_path == "/var/lib/fr/faces.db"
    with pytest.raises(ConfigError, match=r"db_path: environment variable DATA is not set"):
        config_from_mapping({**MINIMAL, "db_path": "${DATA}/faces.db"}, env={})


def test_component_blocks_are_validated_by_their_plugin():
    cfg = config_from_mapping(
        {**MINIMAL, "camera": {"plugin": "sim", "fps": -1, "colour": 1}, "analyzers": ["nope"]},
        env={},
    )
    with pytest.raises(ConfigError) as exc:
        validate_components(cfg, build_registry())
    problems = dict(exc.value.problems)
    assert problems["camera.fps"] == "Input should be greater than or equal to 0 (got -1)"
    assert problems["camera.colour"].startswith("unknown key; allowed keys here: source, fps")
    assert problems["analyzers.0.plugin"].startswith("unknown analyzer 'nope'; available:")


def test_component_shorthand_and_default_config():
    cfg = default_config(telemetry="sim")
    assert cfg.camera.plugin == "sim" and cfg.telemetry.plugin == "sim"
    assert validate_components(cfg, build_registry())["telemetry"] is not None


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("bad.json", '{"device_id": "a",\n "broker_url": }', "invalid JSON at line 2 column"),
        ("dup.json", '{"device_id": "a", "device_id": "b"}', "key 'device_id' appears twice"),
        ("bad.yaml", "device_id: [a\nbroker_url: x\n", "invalid YAML at line"),
        ("dup.yaml", "device_id: a\ndevice_id: b\n", "key 'device_id' appears twice"),
        ("list.yaml", "- a\n- b\n", "top level must be a mapping"),
        ("conf.toml", "a = 1", "unknown extension '.toml'"),
    ],
)
def test_unreadable_files_are_clear_errors(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path, env={})


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


# --- property-based ---------------------------------------------------------------------

device_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
valid_configs = st.fixed_dictionaries(
    {
        "device_id": device_ids,
        "broker_url": st.sampled_from(
            ["https://b.example", "mqtts://10.0.0.1:8883", "https://h:8443/base"]
        ),
    },
    optional={
        "confirmation_frames": st.integers(1, 1000),
        "consistency_threshold": st.floats(0.01, 1.0),
        "cooldown_seconds": st.floats(0, 86400),
        "dev_mode": st.booleans(),
        "db_path": st.text(string.ascii_letters + "/._-", min_size=1, max_size=40),
        "sync_interval_minutes": st.floats(0.01, 10080),
    },
)


@given(valid_configs)
def test_valid_configs_round_trip(data):
    cfg = config_from_mapping(data, env={})
    for key, value in data.items():
        assert getattr(cfg, key) == value
    again = config_from_mapping(json.loads(cfg.model_dump_json(exclude={"api_key"})), env={})
    assert again == cfg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(valid_configs, st.sampled_from(sorted(AppConfig.model_fields)), json_values)
def test_any_value_anywhere_is_accepted_or_a_config_error(data, key, value):
    try:
        cfg = config_from_mapping({**data, key: value}, env={})
    except ConfigError as exc:
        assert exc.problems, "a ConfigError always lists its problems"
        for path, message in exc.problems:
            assert path and message
    else:
        assert isinstance(cfg, AppConfig)


@given(st.text(max_size=300), st.sampled_from(["json", "yaml"]))
def test_arbitrary_text_never_crashes_the_loader(tmp_path_factory, text, fmt):
    path = tmp_path_factory.mktemp("cfg") / f"c.{fmt}"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):
        load_config(path, env={})


def test_env_references_work_inside_component_blocks():
    cfg = config_from_mapping(
        {
            **MINIMAL,
            "camera": {"plugin": "sim", "source": "${CLIP:-/dev/null}"},
            "transport": {"plugin": "jsonl", "path": "${OUT_DIR}/events.jsonl"},
        },
        env={"OUT_DIR": "/var/spool/fr"},
    )
    assert cfg.camera.options["source"] == "/dev/null"
    assert cfg.transport.options["path"] == "/var/spool/fr/events.jsonl"
    validated = validate_components(cfg, build_registry())
    assert str(validated["transport"].path) == "/var/spool/fr/events.jsonl"


def test_config_check_runs_the_file_checks_building_would(tmp_path):
    """Issue 12, item 12: a ca_bundle, client certificate or model file that does not exist
    was "valid" until the device started; now config check says so, without connecting."""
    from click.testing import CliRunner

    from fr_core.app.cli import main

    path = tmp_path / "device.yaml"
    path.write_text(
        "device_id: cam-1\nbroker_url: https://b.example\n"
        f"transport: {{plugin: https, ca_bundle: {tmp_path}/no-ca.pem, "
        f"client_cert: {tmp_path}/no-cert.pem, client_key: {tmp_path}/no-key.pem}}\n"
        f"detector: {{plugin: yunet, model_path: {tmp_path}/no-model.onnx}}\n"
    )
    out = CliRunner().invoke(main, ["config", "check", str(path)])
    assert out.exit_code == 2
    for key in (
        "transport.ca_bundle",
        "transport.client_cert",
        "transport.client_key",
        "detector.model_path",
    ):
        assert f"{key}: Path does not point to a file" in out.output, out.output
    half = tmp_path / "half.yaml"
    (tmp_path / "cert.pem").write_text("x")
    half.write_text(
        "device_id: cam-1\nbroker_url: https://b.example\n"
        f"transport: {{plugin: https, client_cert: {tmp_path}/cert.pem}}\n"
    )
    out = CliRunner().invoke(main, ["config", "check", str(half)])
    assert out.exit_code == 2 and "client_cert and client_key go together" in out.output
