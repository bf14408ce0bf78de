"""Configuration: one YAML or JSON file, validated with pydantic.

Errors name the key path, the bad value and what is allowed. Secrets never appear in errors:
values under a secret-looking key are masked. String values may refer to environment variables
as ``${NAME}`` or ``${NAME:-default}``; the API key also falls back to ``FR_API_KEY``.

The keys the original module's README names (``device_id``, ``broker_url``, ``api_key``,
``confirmation_frames``, ``consistency_threshold``, ``cooldown_seconds``, ``dev_mode``) sit at
the top level under those names, with ``db_path`` and ``sync_interval_minutes``. Components are
chosen by plugin name in blocks such as ``"camera": {"plugin": "sim", "fps": 10}``; every other
key of a block is validated by the model that plugin registered. See docs/config.md.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fr_core.errors import ConfigError
from fr_core.events import EMOTION_CODES
from fr_core.interfaces import ComponentKind

API_KEY_ENV = "FR_API_KEY"
SECRET_WORDS = ("api_key", "password", "secret", "token", "passphrase", "private_key")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
BROKER_SCHEMES = {"https": True, "mqtts": True, "http": False, "mqtt": False}  # scheme -> secure


def is_secret_key(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in SECRET_WORDS)


# --- the settings blocks the stages read (they live here: the config is the root's) -----

DEFAULT_EMOTIONS = [e for e in EMOTION_CODES if e != "neutral"]


class EmotionSettings(BaseModel):
    """The ``emotions`` block of the device config."""

    model_config = ConfigDict(extra="forbid")

    emotions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EMOTIONS),
        description="emotions that produce events (" + ", ".join(EMOTION_CODES) + ")",
    )
    min_intensity: float = Field(
        0.5, gt=0.0, le=1.0, description="least probability of the emotion in an analysis"
    )
    min_duration_seconds: float = Field(
        2.0, ge=0.0, le=3600.0, description="how long an emotion must last before an event"
    )
    cooldown_seconds: float = Field(
        60.0,
        ge=0.0,
        le=86400.0,
        description="least time between two events of one emotion of one person",
    )
    max_misses: int = Field(
        1, ge=0, le=100, description="analyses naming another emotion an episode survives"
    )
    analyze_every_n_frames: int = Field(
        3, ge=1, le=1000, description="analyse each face every n-th processed frame"
    )
    unknown_faces: bool = Field(
        False, description="also report emotions of faces not recognised (user_id null)"
    )

    @field_validator("emotions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in EMOTION_CODES]
        if bad:
            raise ValueError(
                f"unknown emotion(s) {', '.join(map(repr, bad))}; known: {', '.join(EMOTION_CODES)}"
            )
        return v


class MetricsSettings(BaseModel):
    """The ``metrics`` block of the device config."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="serve Prometheus metrics")
    address: str = Field("127.0.0.1", description="listen address (loopback by default)")
    port: int = Field(9108, ge=0, le=65535, description="listen port (0: any free port)")


class ComponentConfig(BaseModel):
    """A component chosen by plugin name; the other keys are that plugin's options.

    Written as ``{"plugin": "sim", "fps": 10}`` or, without options, as the bare name ``"sim"``.
    ``fallback`` names what runs instead when the component cannot start (docs/config.md).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    plugin: str = Field(min_length=1, description="registered name of the component")
    fallback: str | None = Field(
        None,
        min_length=1,
        description="if it cannot start: 'cpu' (the CPU counterpart its plugin declares, e.g. "
        "yunet for yunet_trt) or the registered name of another component of the same kind",
    )
    fallback_options: dict[str, Any] | None = Field(
        None,
        description="the fallback's options; default: those of this block it accepts",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"plugin": value}
        return value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RecognitionSettings(BaseModel):
    """The ``recognition`` block: how faces are tracked and when they are embedded."""

    model_config = ConfigDict(extra="forbid")

    min_face_size: float = Field(
        32.0,
        ge=8.0,
        le=4096.0,
        description="shorter side in pixels below which a face is "
        "not recognised (an embedding of an upscaled tiny face is noise)",
    )
    reembed_every_frames: int = Field(
        15,
        ge=1,
        le=10000,
        description="a recognised track is embedded again after this many frames (not every frame)",
    )
    stable_after_frames: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="consecutive agreeing embeddings after which a track's identity is carried "
        "(default: confirmation_frames)",
    )
    unknown_recheck_frames: int = Field(
        5,
        ge=1,
        le=10000,
        description="a stable unrecognised track is embedded again after this many frames",
    )
    target_far: float = Field(
        0.001,
        ge=1e-6,
        le=0.1,
        description="chance that one decision on a stranger's face names an employee; the "
        "match threshold is calibrated from it for the gallery in force (docs/recognition.md). "
        "A match_threshold set in the config wins over it",
    )
    fusion_frames: int = Field(
        5,
        ge=1,
        le=100,
        description="a track is decided on the mean of its last N embeddings, not one frame "
        "(1: every frame alone)",
    )
    attack_events: bool = Field(
        False,
        description="with a liveness analyzer: report each face judged a presentation attack "
        "as a presentation_attack event with its face image (counted in heartbeats either "
        "way; docs/liveness.md)",
    )
    liveness_fusion: Literal["all"] = Field(
        "all",
        description="how several liveness analyzers (cues) decide together: 'all', a track "
        "is live when every cue that has evidence scores it at or above its own threshold "
        "(docs/liveness.md, 'Cues and their fusion')",
    )
    iou_threshold: float = Field(
        0.3, gt=0.0, lt=1.0, description="least box overlap that continues a track"
    )
    max_missed_frames: int = Field(
        10, ge=0, le=1000, description="frames a track survives without its face"
    )
    image_target_kb: float = Field(
        50.0, ge=5.0, le=500.0, description="size target of the face JPEG in an event (KB)"
    )


class LoggingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class AppConfig(BaseModel):
    """The whole device configuration. Field descriptions are the reference (docs/config.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(
        pattern=_DEVICE_ID,
        description="1-64 characters (letters, digits, '.', '_', ':', '-') starting with a "
        "letter or digit; identifies this device in events and broker topics",
    )
    dev_mode: bool = Field(
        False,
        description="development mode: display names stored locally, local enrolment allowed, "
        "more logging. Never in production.",
    )
    allow_insecure: bool = Field(
        False, description="allow an unencrypted broker URL (http://, mqtt://); tests only"
    )
    broker_url: str = Field(
        description="base URL of the IoT broker: https://... or mqtts://... "
        "(http:// and mqtt:// only with allow_insecure)",
    )
    api_key: SecretStr | None = Field(
        None,
        description=f"broker API key; better given as ${{{API_KEY_ENV}}} or left out, "
        f"in which case the {API_KEY_ENV} environment variable is used",
    )
    confirmation_frames: int = Field(
        5, ge=1, le=1000, description="consecutive frames a track needs before an event"
    )
    consistency_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="share of those frames that must name the same user"
    )
    cooldown_seconds: float = Field(
        30.0, ge=0.0, le=86400.0, description="minimum time between two events of one user"
    )
    match_threshold: float | None = Field(
        None,
        gt=0.0,
        lt=2.0,
        description="a fixed largest cosine distance (1 - cosine similarity) accepted as a "
        "match; null (the default): the threshold is calibrated for the gallery from "
        "recognition.target_far (docs/recognition.md). 0.637 is SFace's published "
        "0.363 pair-verification threshold, far too lenient for a gallery of hundreds",
    )
    db_path: str = Field(
        "fr-edge-data/faces.db", min_length=1, description="path of the local SQLite database"
    )
    sync_interval_minutes: float = Field(
        15.0, gt=0.0, le=10080.0, description="minutes between two enrolment syncs"
    )
    heartbeat_interval_seconds: float = Field(
        60.0, ge=1.0, le=86400.0, description="seconds between two heartbeats"
    )
    camera_watchdog_seconds: float = Field(
        10.0,
        ge=0.0,
        le=3600.0,
        description="a camera that delivers no frame for this long is closed and reopened "
        "(0: never)",
    )
    camera: ComponentConfig = Field(
        ComponentConfig(plugin="sim"), description="camera source plugin and its options"
    )
    detector: ComponentConfig | None = Field(None, description="face detector plugin")
    embedder: ComponentConfig | None = Field(None, description="face embedder plugin")
    matcher: ComponentConfig | None = Field(None, description="gallery matcher plugin")
    transport: ComponentConfig | None = Field(None, description="broker transport plugin")
    storage: ComponentConfig | None = Field(None, description="storage plugin")
    telemetry: ComponentConfig | None = Field(None, description="telemetry plugin")
    accelerator: ComponentConfig | None = Field(None, description="accelerator plugin")
    analyzers: list[ComponentConfig] = Field(
        default_factory=list, description="face analyzers, e.g. emotion"
    )
    recognition: RecognitionSettings = Field(
        default_factory=RecognitionSettings, description="tracking and embedding"
    )
    emotions: EmotionSettings = Field(
        default_factory=EmotionSettings,
        description="when an emotion analyzer's results become emotion events",
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="Prometheus endpoint of fr-edge run"
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="log output")

    @field_validator("db_path")
    @classmethod
    def _on_disk(cls, v: str) -> str:
        if v.strip() in (":memory:", "sqlite://", "sqlite:///:memory:") or "mode=memory" in v:
            raise ValueError(
                "must be a file (or a database URL): an in-memory SQLite database is one per "
                "connection, so each thread would see its own empty database"
            )
        return v

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("broker_url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        parts = urlsplit(v)
        # schemes beyond these are served by transport plugins that declare them; whether
        # one is installed is checked with the plugins (validate_components)
        if not re.fullmatch(r"[a-z][a-z0-9+.-]{0,31}", parts.scheme) or not parts.hostname:
            raise ValueError(
                "must be an absolute URL with a host and a scheme: "
                + ", ".join(f"{s}://" for s in BROKER_SCHEMES)
                + ", or one an installed transport plugin declares"
            )
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; use api_key or the plugin's options")
        if parts.query:
            raise ValueError("must not contain a query string (secrets never go in URLs)")
        if not BROKER_SCHEMES.get(parts.scheme, True) and not info.data.get("allow_insecure"):
            raise ValueError(
                f"unencrypted {parts.scheme}:// is refused; use https:// or mqtts://, or set "
                "allow_insecure: true (for tests on loopback only)"
            )
        return v.rstrip("/")

    def components(self) -> list[tuple[str, ComponentKind, ComponentConfig]]:
        """Every configured component as (key path, kind, block)."""
        out = []
        single = {
            "camera": ComponentKind.CAMERA,
            "detector": ComponentKind.DETECTOR,
            "embedder": ComponentKind.EMBEDDER,
            "matcher": ComponentKind.MATCHER,
            "transport": ComponentKind.TRANSPORT,
            "storage": ComponentKind.STORAGE,
            "telemetry": ComponentKind.TELEMETRY,
            "accelerator": ComponentKind.ACCELERATOR,
        }
        for key, kind in single.items():
            block = getattr(self, key)
            if block is not None:
                out.append((key, kind, block))
        for i, block in enumerate(self.analyzers):
            out.append((f"analyzers.{i}", ComponentKind.ANALYZER, block))
        return out

    def api_key_value(self) -> str | None:
        """The API key in clear, for the transport only. Never log it."""
        return self.api_key.get_secret_value() if self.api_key else None


# --- error formatting ---------------------------------------------------------------------


def _fmt_value(path: str, value: Any) -> str:
    if is_secret_key(path):
        return "'***'"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> list[tuple[str, str]]:
    """Turn a pydantic error into ``(key path, message)`` pairs with value and what is allowed.

    ``model`` is the model that was validated (default: :class:`AppConfig` when the error
    came from it); it is used to list the allowed keys and to explain pattern rules.
    """
    if model is None and exc.title == "AppConfig":
        model = AppConfig
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        path = ".".join(([prefix] if prefix else []) + loc) or (prefix or "<root>")
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else ""
            msg = "unknown key" + (f"; allowed keys here: {allowed}" if allowed else "")
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if kind == "string_pattern_mismatch":
                parent = _model_at(model, loc[:-1])
                field = parent.model_fields.get(loc[-1]) if parent and loc else None
                if field is not None and field.description:
                    msg = f"must be {field.description}"
            if "input" in err and kind not in ("model_type", "dict_type"):
                msg += f" (got {_fmt_value(path, err['input'])})"
        problems.append((path, msg))
    return problems


def _model_at(model: type[BaseModel] | None, loc: list[str]) -> type[BaseModel] | None:
    """The nested model class at ``loc`` inside ``model``, if there is one."""
    for part in loc:
        if model is None:
            return None
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


# --- loading ------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def parse_text(text: str, fmt: Literal["json", "yaml"], source: str = "<config>") -> Any:
    """Parse JSON or YAML text, with line numbers in errors and duplicate keys refused."""
    if fmt == "json":
        try:
            return json.loads(text, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"{source}: invalid JSON: {exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


def interpolate_env(data: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string value."""
    if isinstance(data, dict):
        return {
            k: interpolate_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in data.items()
        }
    if isinstance(data, list):
        return [interpolate_env(v, env, f"{path}.{i}") for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{path or '<root>'}: environment variable {name} is not set "
                f"(write ${{{name}:-default}} to give a default)",
                [(path, f"environment variable {name} is not set")],
            )

        return _ENV_REF.sub(sub, data)
    return data


def config_from_mapping(
    data: Any, *, env: Mapping[str, str] | None = None, source: str = "<config>"
) -> AppConfig:
    """Validate an already-parsed mapping (after ``${VAR}`` interpolation)."""
    env = os.environ if env is None else env
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys to values, "
            f"got {type(data).__name__}"
        )
    data = interpolate_env(data, env)
    if data.get("api_key") in (None, "") and env.get(API_KEY_ENV):
        data = {**data, "api_key": env[API_KEY_ENV]}
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc)
        lines = "\n".join(f"  {p}: {m}" for p, m in problems)
        raise ConfigError(
            f"{source}: {len(problems)} invalid setting(s):\n{lines}", problems
        ) from None


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> AppConfig:
    """Read and validate a YAML (.yaml/.yml) or JSON (.json) config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config path {p} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc.strerror}") from None
    suffix = p.suffix.lower()
    if suffix == ".json":
        fmt: Literal["json", "yaml"] = "json"
    elif suffix in (".yaml", ".yml"):
        fmt = "yaml"
    else:
        raise ConfigError(
            f"config file {p}: unknown extension {suffix or '(none)'!r}; use .json, .yaml or .yml"
        )
    return config_from_mapping(parse_text(text, fmt, str(p)), env=env, source=str(p))


#: Kinds whose blocks may name a fallback: the models the engine builds and runs itself.
#: (The transport and storage are built by the IoT client and the database facade, the
#: camera is opened later: a fallback there would be reported but not used.)
FALLBACK_KINDS = (ComponentKind.DETECTOR, ComponentKind.EMBEDDER, ComponentKind.ANALYZER)


def broker_scheme_problems(config: AppConfig, registry: Any) -> list[tuple[str, str]]:
    """``broker_url``'s scheme must be one fr-edge knows or one an installed transport
    declares; a declared unencrypted scheme needs ``allow_insecure``."""
    scheme = urlsplit(config.broker_url).scheme
    if scheme in BROKER_SCHEMES:
        return []
    owner = registry.scheme_transport(scheme)
    if owner is None:
        declared = sorted(
            {
                s
                for r in registry.registrations(ComponentKind.TRANSPORT)
                for s in (r.url_schemes or {})
            }
            | set(BROKER_SCHEMES)
        )
        return [
            (
                "broker_url",
                f"no installed transport serves {scheme}:// (schemes: "
                + ", ".join(f"{s}://" for s in declared)
                + "); a transport plugin declares its own with register(..., url_schemes=...)",
            )
        ]
    name, encrypted = owner
    if not encrypted and not config.allow_insecure:
        return [
            (
                "broker_url",
                f"{scheme}:// (transport {name!r}) is unencrypted: set allow_insecure: true "
                "(for tests on loopback only) or use its encrypted scheme",
            )
        ]
    return []


def validate_components(
    config: AppConfig, registry: Any, source: str | None = None
) -> dict[str, BaseModel | None]:
    """Check every component block against its plugin; collects all problems before raising."""
    validated: dict[str, BaseModel | None] = {}
    problems: list[tuple[str, str]] = list(broker_scheme_problems(config, registry))
    for path, kind, block in config.components():
        try:
            validated[path] = registry.validate_options(kind, block.plugin, block.options, path)
        except ConfigError as exc:
            problems.extend(exc.problems or [(f"{path}.plugin", str(exc))])
        if block.fallback is not None:
            if kind not in FALLBACK_KINDS:
                allowed = ", ".join(k.value for k in FALLBACK_KINDS)
                problems.append(
                    (
                        f"{path}.fallback",
                        f"a {kind.value} cannot have a fallback (only {allowed}: the "
                        "components the engine builds and uses itself)",
                    )
                )
                continue
            try:
                name, options = registry.fallback_of(kind, block, path)
                validated[f"{path}.fallback"] = registry.validate_options(
                    kind, name, options, f"{path}.fallback"
                )
            except ConfigError as exc:
                problems.extend(exc.problems or [(f"{path}.fallback", str(exc))])
    if problems:
        lines = "\n".join(f"  {p}: {m}" for p, m in problems)
        where = f"{source}: " if source else ""
        raise ConfigError(
            f"{where}{len(problems)} invalid component setting(s):\n{lines}", problems
        )
    return validated


def default_config(**overrides: Any) -> AppConfig:
    """The embedded defaults ``fr-edge demo`` runs on: simulated camera, loopback broker."""
    base: dict[str, Any] = {
        "device_id": "demo-001",
        "dev_mode": True,
        "broker_url": "https://127.0.0.1:8443",
        "camera": {"plugin": "sim"},
    }
    base.update(overrides)
    return AppConfig.model_validate(base)
