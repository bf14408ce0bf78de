"""The ``fr-edge`` command line.

Exit codes (the same for every command):

==  ==========================================================
0   success
1   runtime error (a component failed, a file could not be written, ...)
2   bad usage or invalid configuration (the message says what and where)
3   plugin error (a plugin is broken or a component unavailable)
130 interrupted (Ctrl-C)
==  ==========================================================

Errors are printed as one line (a config error lists each bad key on its own line under it);
the traceback only with ``--debug``. Logs go to stderr, human-readable by default or as JSON
lines with ``--log-format json``; command output goes to stdout.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import numpy as np

from fr_core import __version__
from fr_core.config import AppConfig, default_config, load_config, validate_components
from fr_core.enrolment import kit as enrolment
from fr_core.enrolment.kit import DEFAULT_MIN_FACE, DEFAULT_MIN_SHARPNESS, EnrolmentKit
from fr_core.errors import ConfigError, FrEdgeError
from fr_core.files import IMAGE_EXTENSIONS, atomic_write
from fr_core.interfaces import ComponentKind
from fr_core.logsetup import register_secret, setup_logging
from fr_core.plugins import DISABLE_ENV, BuildContext, build_registry
from fr_core.storage import (
    DatabaseManager,
    DevModeError,
    check_embedding,
    check_model,
    check_user_id,
)
from fr_core.syncpage import decode_embedding

log = logging.getLogger("fr_core.app.cli")

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_PLUGIN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Group(click.Group):
    """Turns every exception into one clear line and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except FrEdgeError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except Exception as exc:  # a bug or an unexpected failure: say where to look
            text = " ".join(str(exc).split())
            _fail(ctx, f"{type(exc).__name__}: {text}", EXIT_RUNTIME, unexpected=True)


def _fail(ctx: click.Context, message: str, code: int, unexpected: bool = False) -> None:
    debug = bool(ctx.obj and ctx.obj.get("debug"))
    if debug:
        traceback.print_exc()
    hint = " (run with --debug for the traceback)" if unexpected and not debug else ""
    click.echo(f"error: {message}{hint}", err=True)
    ctx.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fr-edge")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines for people (text) or for log collectors (json, one object per line).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="Least severe log level shown.",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, log_format: str, log_level: str) -> None:
    """fr-edge: edge face recognition that reports attendance events to an IoT broker.

    Components (camera, detector, embedder, matcher, transport, storage, ...) are plugins
    chosen by name in the config file; `fr-edge plugins` lists what is installed.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    setup_logging("DEBUG" if debug else log_level, log_format)  # type: ignore[arg-type]


# --- plugins ------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins, the components each registers, and load errors.

    A plugin that failed to import (TensorRT on a machine without it, say) is listed with
    the reason; it does not stop the others. Plugins named in FR_DISABLED_PLUGINS are
    not loaded.
    """
    registry = build_registry()
    regs = registry.registrations()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "components": [
                        {
                            "kind": r.kind.value,
                            "name": r.name,
                            "plugin": r.plugin,
                            "distribution": r.distribution,
                            "available": r.unavailable is None,
                            "unavailable_reason": r.unavailable,
                            "description": r.description,
                        }
                        for r in regs
                    ],
                    "load_errors": [
                        {"plugin": e.plugin, "distribution": e.distribution, "error": e.error}
                        for e in registry.load_errors
                    ],
                    "disabled": registry.pm.disabled,
                },
                indent=2,
            )
        )
        return
    rows = [("KIND", "NAME", "PLUGIN", "DISTRIBUTION", "STATUS")]
    for r in regs:
        status = "ok" if r.unavailable is None else f"unavailable: {r.unavailable}"
        rows.append((r.kind.value, r.name, r.plugin, r.distribution or "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=False)) + "  " + row[4]
        )
    if not regs:
        click.echo("(no components registered)")
    debug = bool(click.get_current_context().find_root().obj.get("debug"))
    for e in registry.load_errors:
        click.echo(f"\nplugin {e.plugin} ({e.distribution or 'in code'}) failed to load: {e.error}")
        if debug and e.detail:
            click.echo(e.detail.rstrip())
    if registry.pm.disabled:
        click.echo(f"\ndisabled by {DISABLE_ENV}: {', '.join(registry.pm.disabled)}")


# --- models -------------------------------------------------------------------------------


def _declared_models() -> list[Any]:
    registry = build_registry()
    return [m for batch in registry.pm.hook.fr_model_files() for m in (batch or [])]


@main.group()
def models() -> None:
    """Model files no package ships (liveness weights): list them, fetch them."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--to",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model cache to look in (default: ~/.cache/fr-edge/models; $FR_EDGE_CACHE moves it).",
)
def models_list(as_json: bool, root: Path | None) -> None:
    """Every model file the installed plugins declare: present and verified, or why not."""
    from fr_core import modelfiles

    rows = modelfiles.status(_declared_models(), root)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("(no plugin declares model files)")
    for r in rows:
        click.echo(f"{r['group']}/{r['name']}  {r['size']:,} bytes  {r['state']}  {r['path']}")
    if any(r["state"] != "verified" for r in rows):
        sys.exit(1)


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Copy the files from this folder (offline installation) instead of downloading.",
)
@click.option(
    "--to",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model cache to fill (default: ~/.cache/fr-edge/models; $FR_EDGE_CACHE moves it).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a tty).")
def models_fetch(
    names: tuple[str, ...], source: Path | None, root: Path | None, progress: bool | None
) -> None:
    """Download (or copy with --from) the named groups or files, all by default, into the
    model cache, each checked against its pinned SHA-256 and size before it appears there."""
    from fr_core import modelfiles

    chosen = modelfiles.select(_declared_models(), names)
    shown = sys.stderr.isatty() if progress is None else progress
    modelfiles.fetch(chosen, source=source, root=root, progress=shown, say=click.echo)


# --- plugin scaffolding -------------------------------------------------------------------


@main.group()
def plugin() -> None:
    """Start a plugin of your own (docs/writing_plugins.md)."""


@plugin.group("new")
def plugin_new() -> None:
    """Write a plugin package skeleton."""


@plugin_new.command("transport")
@click.argument("name")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where the package folder is created.",
)
@click.option("--scheme", help="The broker_url scheme it serves (default: the name).")
def plugin_new_transport(name: str, folder: Path, scheme: str | None) -> None:
    """A transport plugin package NAME: entry point, config model, the transport to fill in,
    and the conformance suite wired to it (pip install -e '.[test]' && pytest)."""
    from fr_core.app.scaffold import new_transport

    try:
        files = new_transport(name, folder, scheme)
    except (ValueError, FileExistsError) as exc:
        raise FrEdgeError(str(exc)) from None
    root = files[0].parent
    for f in files:
        click.echo(f"wrote {f}")
    click.echo(
        f"next: cd {root} && pip install -e '.[test]' && pytest   "
        "(the conformance tests fail until the transport's methods are written)"
    )


# --- config -------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Check configuration files and show the configuration reference."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE (YAML or JSON) and every plugin block in it.

    Prints each problem with its key path, the bad value and what is allowed; exits 2 if
    there is any. Environment variables referenced as ${NAME} must be set.
    """
    cfg = load_config(file)
    validate_components(cfg, build_registry(), str(file))
    click.echo(f"{file}: valid")
    for path, kind, block in cfg.components():
        click.echo(f"  {path}: {kind.value} {block.plugin!r}")
    click.echo(f"  api_key: {'set' if cfg.api_key else 'not set'}")


@config.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the configuration file (plugin blocks excepted)."""
    click.echo(json.dumps(AppConfig.model_json_schema(), indent=2))


# --- run ------------------------------------------------------------------------------------

device_config_option = click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Device config file.",
)


@main.command()
@device_config_option
@click.option(
    "--max-frames",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many frames (default: run until stopped).",
)
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an annotated video (boxes, track ids, who, fps) to this .mp4/.avi file.",
)
def run(config_file: Path, max_frames: int | None, preview: Path | None) -> None:
    """Run the device: camera, recognition, events to the broker, sync, heartbeats.

    Stops on SIGTERM or Ctrl-C within a bounded time (events already queued stay in the
    outbox for the next start), or at the end of a file source.
    """
    from fr_core.app.runner import DeviceRunner

    cfg = load_config(config_file)
    setup_logging(cfg.logging.level, cfg.logging.format)
    register_secret(cfg.api_key_value())
    result = DeviceRunner(cfg, build_registry(), preview=preview).run(max_frames=max_frames)
    engine = result["engine"]
    rec = result["recognition"]
    box = result["outbox"]
    click.echo(
        f"processed {engine['frames']} frames at {engine['fps']} fps; "
        f"{rec.get('faces', 0)} faces, {rec.get('events', 0)} events; "
        f"outbox: {box.get('queued', 0)} queued, {box.get('sent', 0)} sent"
    )


def _component(cfg: AppConfig, registry: Any, key: str, default: str) -> Any:
    """The config's ``key`` component (``default`` when the config names none), built as
    ``fr-edge run`` builds it."""

    block = getattr(cfg, key)
    ctx = BuildContext(registry=registry, app_config=cfg)
    if block is None:
        return registry.create(ComponentKind(key), default, {}, ctx, path=key)
    component, _ = registry.create_block(ComponentKind(key), block, ctx, path=key)
    return component  # with its fallback, as fr-edge run would run it


def _face_models(cfg: AppConfig, registry: Any) -> tuple[Any, Any, str]:
    """The config's detector and embedder (YuNet and SFace when it names none), and the
    detector's name."""
    detector = _component(cfg, registry, "detector", "yunet")
    embedder = _component(cfg, registry, "embedder", "sface")
    return detector, embedder, cfg.detector.plugin if cfg.detector else "yunet"


def _matcher(cfg: AppConfig, registry: Any) -> Any:
    """A new matcher as the config names it (numpy by default), with the config's policy."""
    return _component(cfg, registry, "matcher", "numpy")


def _galleries(db: Any) -> dict[str, tuple[list[str], Any]]:
    """Per model, user ids and (n, dim) float32 embeddings of ``db``'s enrolments, read in
    one pass."""

    ids: dict[str, list[str]] = {}
    blocks: dict[str, list[Any]] = {}
    for m, block_ids, block in db.iter_embedding_blocks(5000):
        ids.setdefault(m, []).extend(block_ids)
        blocks.setdefault(m, []).append(block)
    return {m: (ids[m], np.concatenate(blocks[m])) for m in ids}


def enrolment_rule_options(f: Any) -> Any:
    """--min-face and --min-sharpness: the enrolment quality rules, one definition for
    `fr-edge enroll` and `fr-edge embed` (defaults: fr_core.enrolment's)."""
    f = click.option(
        "--min-sharpness",
        type=click.FloatRange(min=0),
        default=DEFAULT_MIN_SHARPNESS,
        show_default=True,
        help="Least sharpness (variance of the Laplacian of the aligned 112 px face crop).",
    )(f)
    return click.option(
        "--min-face",
        type=click.IntRange(min=16),
        default=DEFAULT_MIN_FACE,
        show_default=True,
        help="Least face size in pixels (shorter side of the box).",
    )(f)


@main.command()
@device_config_option
@click.argument("user_id")
@click.argument("photo", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", "display_name", help="Display name (stored: dev mode only).")
@enrolment_rule_options
@click.option(
    "--allow-similar",
    is_flag=True,
    help="Enrol even if the face is recognised as another enrolled employee.",
)
def enroll(
    config_file: Path,
    user_id: str,
    photo: Path,
    display_name: str | None,
    min_face: int,
    min_sharpness: float,
    allow_similar: bool,
) -> None:
    """Enrol an employee on this device from a photo (dev mode only).

    Production devices get their enrolments from the broker by sync; this command refuses
    to run unless the config sets dev_mode: true. The photo must show exactly one face, at
    least --min-face pixels, sharp enough, and not be recognised as another employee by the
    device's own decision (fr_core.pipeline.decision) unless --allow-similar is given.
    """

    from fr_core.pipeline.decision import identify

    cfg = load_config(config_file)
    if not cfg.dev_mode:
        raise DevModeError(
            "local enrolment is refused in production mode (dev_mode: false): "
            "employees are enrolled centrally and reach devices by sync"
        )
    registry = build_registry()

    detector, embedder, detector_name = _face_models(cfg, registry)
    kit = EnrolmentKit(
        detector, embedder, detector_name, min_face=min_face, min_sharpness=min_sharpness
    )
    record = kit.embed_photo(photo, user_id)  # the central kit's rules and computation
    embedding, size, sharpness = record.embedding, record.face_px, record.sharpness
    with DatabaseManager.from_config(cfg, registry) as db:
        if not allow_similar:
            # the device's own decision: would this face be taken for someone else?
            matcher = _matcher(cfg, registry)
            ids, rows = _galleries(db).get(embedder.model_name, ([], None))
            others = [i for i, u in enumerate(ids) if u != user_id]
            matcher.replace_gallery(
                embedder.model_name,
                [ids[i] for i in others],
                rows[others] if others else np.empty((0, embedding.size), np.float32),
            )
            decision = identify(matcher, embedder.model_name, embedding)
            if decision.user_id is not None:
                raise FrEdgeError(
                    f"the face in {photo} is recognised as {decision.user_id} (similarity "
                    f"{decision.similarity:.3f}, threshold {decision.threshold:.3f}): the same "
                    "person enrolled twice, or two people the device cannot tell apart. "
                    "Remove the other enrolment, or pass --allow-similar to enrol anyway"
                )
        db.enroll_local(
            user_id,
            embedding,
            embedder.model_name,
            display_name=display_name,
            detector=detector_name,
        )
    click.echo(
        f"enrolled {user_id} ({embedder.model_name}, {embedding.size} values; face "
        f"{size} px, sharpness {sharpness:.0f})"
    )


# --- the central side's enrolment kit ------------------------------------------------------


def _photo_list(paths: tuple[Path, ...], ids_file: Path | None) -> list[tuple[Path, str | None]]:
    mapping: dict[str, str] = {}
    if ids_file is not None:
        with open(ids_file, newline="", encoding="utf-8-sig") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                if not row.get("photo") or not row.get("user_id"):
                    raise FrEdgeError(f"{ids_file}:{n}: needs the columns photo and user_id")
                mapping[Path(row["photo"]).name] = row["user_id"]
    items: list[tuple[Path, str | None]] = []
    for p in paths:
        files = (
            sorted(x for x in p.iterdir() if x.suffix.lower() in IMAGE_EXTENSIONS)
            if p.is_dir()
            else [p]
        )
        items += [(f, mapping.get(f.name)) for f in files]
    if ids_file is not None:
        missing = [str(f) for f, uid in items if uid is None]
        if missing:
            raise FrEdgeError(f"{ids_file} gives no user_id for {', '.join(missing[:5])}")
    return items


@main.command()
@click.argument("photos", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A device config: its detector and embedder are used (default: yunet and sface).",
)
@click.option(
    "--ids",
    "ids_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CSV with columns photo,user_id (default: each photo's file name without extension).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Output file (default: stdout)."
)
@enrolment_rule_options
@click.option(
    "--check",
    "check_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Instead of embedding: check a central-side file of records (JSON lines or .csv) "
    "against what devices accept.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
def embed(
    photos: tuple[Path, ...],
    config_file: Path | None,
    ids_file: Path | None,
    fmt: str,
    out: Path | None,
    min_face: int,
    min_sharpness: float,
    check_file: Path | None,
    progress: bool | None,
) -> None:
    """Turn employee photos (files or folders) into sync-ready enrolment records, computed
    as the devices compute them (docs/central.md); or, with --check, verify a file of records.

    Each photo must show exactly one face, at least --min-face pixels, sharp enough; a refused
    photo is reported with the reason on stderr and the exit status is 1.
    """
    from tqdm import tqdm

    cfg = load_config(config_file) if config_file is not None else None
    kit = enrolment.EnrolmentKit.from_config(cfg, min_face=min_face, min_sharpness=min_sharpness)
    if check_file is not None:
        models = {kit.model: int(kit.embedder.dim)}
        result = enrolment.check_records(enrolment.read_records(check_file), models)
        for line, why in result.problems:
            click.echo(f"{check_file}:{line}: refused: {why}", err=True)
        for line, why in result.warnings:
            click.echo(f"{check_file}:{line}: warning: {why}", err=True)
        click.echo(
            f"{result.accepted} records devices accept, {len(result.problems)} refused, "
            f"{len(result.warnings)} warnings ({', '.join(f'{m} {d}' for m, d in models.items())})"
        )
        if result.problems:
            sys.exit(1)
        return
    if not photos:
        raise FrEdgeError("give photos or folders of photos to embed (or --check FILE)")
    items = _photo_list(photos, ids_file)
    shown = sys.stderr.isatty() if progress is None else progress
    refused: list[Any] = []

    def records() -> Iterator[enrolment.EnrolmentRecord]:
        bar = tqdm(kit.embed_many(items), total=len(items), desc="photos", disable=not shown)
        for item in bar:
            if isinstance(item, enrolment.EnrolmentRefused):
                refused.append(item)
                click.echo(f"refused {item.photo}: {item.reason}", err=True)
            else:
                yield item

    if out is None:
        n = enrolment.write_records(records(), sys.stdout, fmt)
    else:
        buffer = io.StringIO(newline="")
        n = enrolment.write_records(records(), buffer, fmt)
        atomic_write(out, buffer.getvalue().encode("utf-8"))  # the old file or the whole new one
    click.echo(f"{n} records, {len(refused)} photos refused", err=True)
    if refused:
        sys.exit(1)


# --- status and sync ----------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def _open_db(config_file: Path, must_exist: bool, inspect: bool) -> tuple[Any, Any, Any]:
    """The device's database; ``inspect``: for commands that only look, which never make a
    device key nor forget what another key sealed (docs/privacy.md)."""

    cfg = load_config(config_file)
    registry = build_registry()
    register_secret(cfg.api_key_value())
    db = DatabaseManager.from_config(cfg, registry, inspect=inspect)
    if must_exist and "://" not in db.path and not Path(db.path).exists():
        raise FrEdgeError(
            f"no database at {db.path} yet: it is created by `fr-edge sync` or `fr-edge run`"
        )
    db.initialize()
    return cfg, registry, db


@main.command()
@device_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_file: Path, as_json: bool) -> None:
    """Show the device database: enrolments per model, sync version and age, outbox.

    Reads the database the config names (db_path or the storage block); it does not contact
    the broker.
    """
    _, _, db = _open_db(config_file, must_exist=True, inspect=True)
    try:
        counts = db.count_enrollments()
        state = db.get_sync_state()
        box = db.outbox_stats()
        sealing = db.sealing_status()
    finally:
        db.close()
    now = time.time()
    data = {
        "enrollments": counts,
        "sealing": sealing,
        "sync": {
            "version": state.version,
            "last_success_age_seconds": round(now - state.last_success_at, 1)
            if state.last_success_at
            else None,
            "last_attempt_age_seconds": round(now - state.last_attempt_at, 1)
            if state.last_attempt_at
            else None,
            "last_error": state.last_error,
        },
        "outbox": {
            "depth": box.depth,
            "bytes": box.bytes,
            "oldest_event_age_seconds": round(now - box.oldest_created_at, 1)
            if box.oldest_created_at
            else None,
            "sent_total": box.sent_total,
            "failed_attempts_total": box.failed_attempts_total,
            "dropped_total": box.dropped_total,
            "rejected_total": box.rejected_total,
            "expired_total": box.expired_total,
        },
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    total = sum(counts.values())
    click.echo(
        f"enrolments: {total}"
        + (" (" + ", ".join(f"{m}: {n}" for m, n in sorted(counts.items())) + ")" if counts else "")
    )
    click.echo(
        f"templates: sealed ({sealing['cipher']}), key id {sealing['key_id']} from "
        f"{sealing['key_source']}, since {sealing['sealed_since']}"
        if sealing.get("sealed")
        else "templates: NOT sealed (the storage plugin does not seal them)"
    )
    sync = data["sync"]
    click.echo(
        f"sync: version {state.version}, last success "
        f"{_age(sync['last_success_age_seconds'])}"
        + (f", last error: {state.last_error}" if state.last_error else "")
    )
    ob = data["outbox"]
    oldest = ob["oldest_event_age_seconds"]
    click.echo(
        f"outbox: {box.depth} events ({box.bytes / 1024:.1f} KiB), oldest "
        f"{_age(oldest) if oldest is not None else '-'}; sent {box.sent_total}, "
        f"dropped {box.dropped_total}, rejected {box.rejected_total}, "
        f"expired {box.expired_total}"
    )


@main.command()
@device_config_option
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: on a terminal, for syncs of 1,000 changes or more).",
)
def sync(config_file: Path, progress: bool | None) -> None:
    """Pull enrolment changes from the broker once, now.

    Uses the config's transport. Exits 1 if the sync failed; what was applied before the
    failure is kept and the next sync resumes from there.
    """
    from fr_core.enrolment.sync import SyncManager

    cfg, registry, db = _open_db(config_file, must_exist=False, inspect=False)
    if cfg.transport is None:
        db.close()
        raise ConfigError(f"{config_file}: no transport configured: add a transport block")
    ctx = BuildContext(registry=registry, app_config=cfg)
    transport = registry.create(
        ComponentKind.TRANSPORT, cfg.transport.plugin, cfg.transport.options, ctx, path="transport"
    )
    show = progress if progress is not None else sys.stderr.isatty()
    bar: Any = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if not show or (progress is None and total < 1000):
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, desc="sync", unit=" changes", file=sys.stderr)
        bar.total = max(bar.total or 0, total)
        bar.update(done - bar.n)

    # the models this device runs: a page with anything else is refused whole, as in fr-edge run
    embedder = _component(cfg, registry, "embedder", "sface")
    manager = SyncManager(db, transport, models={embedder.model_name: embedder.dim})
    try:
        manager.check_enrolments()
        transport.start()
        result = manager.sync_now(progress=on_progress)
    finally:
        if bar is not None:
            bar.close()
        stop = getattr(transport, "stop", None)
        if callable(stop):
            stop()
        db.close()
    kind = "snapshot" if result.snapshot else "incremental"
    line = (
        f"sync ({kind}): version {result.version_before} -> {result.version_after}, "
        f"{result.upserts} upserts, {result.deletions} deletions, {result.pages} pages "
        f"in {result.seconds:.2f} s"
    )
    click.echo(line)
    if not result.ok:
        raise FrEdgeError(f"sync failed: {result.error}")


# --- evaluate and calibrate ---------------------------------------------------------------

optional_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Device config file (default: the embedded defaults: YuNet, SFace, numpy matcher).",
)
target_far_option = click.option(
    "--target-far",
    type=click.FloatRange(min=0, max=0.1, min_open=True),
    help="Target false-accept rate per decision (default: the config's recognition.target_far).",
)


def _config_or_default(config_file: Path | None, target_far: float | None) -> AppConfig:
    cfg = load_config(config_file) if config_file is not None else default_config()
    return cfg if target_far is None else _with_policy(cfg, target_far, cfg.match_threshold)


def _with_policy(cfg: AppConfig, target_far: float, match_threshold: float | None) -> AppConfig:
    """``cfg`` with another decision policy (recognition.target_far, match_threshold)."""
    rec = cfg.recognition.model_copy(update={"target_far": target_far})
    return cfg.model_copy(update={"recognition": rec, "match_threshold": match_threshold})


@main.command()
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@optional_config_option
@target_far_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("evaluation"),
    show_default=True,
    help="Folder for report.json, report.md, det.png and false_accepts.png.",
)
@click.option(
    "--sizes", default="10,50,125", show_default=True, help="Gallery sizes below all enrolled."
)
@click.option(
    "--draws",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Random galleries drawn per smaller size.",
)
@click.option(
    "--distractors",
    default="250,500,1000",
    show_default=True,
    help="Unknown people enrolled as distractors to grow the gallery.",
)
@click.option(
    "--face",
    type=click.Choice(["central", "largest"]),
    default="central",
    show_default=True,
    help="Which face of a photo with several.",
)
@click.option(
    "--baseline",
    type=click.FloatRange(min=0, max=2, min_open=True),
    default=0.637,
    show_default=True,
    help="Fixed cosine distance to compare with (0.637: SFace's pair-verification point).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--list-accepted",
    is_flag=True,
    help="Also list, per scenario, the strangers' photos accepted and as whom (names the "
    "photos: keep such a report private).",
)
@click.option("--plots/--no-plots", default=True, help="Write the PNG plots (needs matplotlib).")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bars (default: on a terminal)."
)
def evaluate(
    folder: Path,
    config_file: Path | None,
    target_far: float | None,
    out_dir: Path,
    sizes: str,
    draws: int,
    distractors: str,
    face: str,
    baseline: float,
    seed: int,
    list_accepted: bool,
    plots: bool,
    progress: bool | None,
) -> None:
    """Measure open-set identification on a labelled folder of photos.

    FOLDER has a manifest.csv (identity,file,role; role gallery, probe or unknown), as
    ../shared/data/lfw-dev. Every photo goes through the configured detector and embedder,
    every decision through the device's own matcher and decision rule. Reports right-person
    acceptance, wrong-employee matches and strangers accepted per gallery size, for single
    photos and tracks of three, against a fixed-threshold baseline (docs/recognition.md).
    """
    from fr_core.evaluation import identification as ev
    from fr_core.pipeline.decision import DecisionPolicy

    def ints(text: str, what: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise click.BadParameter(
                f"{what} must be integers separated by commas: {text!r}"
            ) from None

    cfg = _config_or_default(config_file, target_far)
    photos = ev.read_manifest(folder)
    registry = build_registry()
    detector, embedder, _ = _face_models(cfg, registry)
    show = progress if progress is not None else sys.stderr.isatty()
    started = time.perf_counter()
    embeddings, problems = ev.embed_photos(
        folder, photos, detector, embedder, face=face, progress=show
    )
    embed_seconds = time.perf_counter() - started
    policy = DecisionPolicy.from_config(cfg)

    def make_matcher(pol: DecisionPolicy | None) -> Any:
        if pol is None or pol == policy:
            return _matcher(cfg, registry)
        return _matcher(_with_policy(cfg, pol.target_far, pol.match_threshold), registry)

    report = ev.evaluate(
        photos,
        embeddings,
        embedder.model_name,
        make_matcher,
        policy=policy,
        baseline=DecisionPolicy(match_threshold=baseline),
        sizes=ints(sizes, "--sizes"),
        draws=draws,
        distractors=ints(distractors, "--distractors"),
        seed=seed,
        progress=show,
        list_accepted=list_accepted,
    )
    report["seconds"] = {
        "embedding": round(embed_seconds, 1),
        "total": round(time.perf_counter() - started, 1),
    }
    report["no_embedding_reasons"] = sorted({p for p in problems if p})
    report["folder"] = str(folder)
    out_dir.mkdir(parents=True, exist_ok=True)

    atomic_write(out_dir / "report.json", json.dumps(report, indent=1).encode())
    atomic_write(out_dir / "report.md", (ev.table(report) + "\n").encode())
    written = ev.write_plots(report, out_dir) if plots else []
    click.echo(ev.table(report))
    for sc in report["scenarios"] if list_accepted else ():
        for file, who, similarity in sc["accepted_strangers"]:
            click.echo(f"{sc['name']}: stranger {file} accepted as {who} ({similarity:.3f})")
    click.echo(
        f"{report['photos']} photos ({len(report['no_embedding'])} without a face) in "
        f"{report['seconds']['total']:.0f} s; report: {out_dir / 'report.json'}"
        + "".join(f", {p}" for p in written)
    )


@main.command("evaluate-liveness")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Take the detector and every liveness analyzer (cue) from this config (default: "
    "yunet and the cues named by --cue with their defaults).",
)
@click.option(
    "--cue",
    "cue_names",
    multiple=True,
    help="A liveness analyzer to evaluate, by plugin name (repeatable; default: liveness). "
    "Ignored with --config.",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Per-face ground truth, CSV file,x,y,w,h,label[,note] (default: FOLDER/labels.csv "
    "when present; docs/liveness.md).",
)
@click.option(
    "--live-video",
    "live_videos",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A video of live people: its tracks count as live tracks (repeatable).",
)
@click.option(
    "--samples",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Folder of the model authors' sample images, to compare with their verdicts.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--track-frames", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option(
    "--tracks-per-photo",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Noise draws per face (each a still track of --track-frames frames).",
)
@click.option(
    "--moved-tracks",
    type=click.IntRange(0, 1000),
    default=3,
    show_default=True,
    help="Synthetic hand-held tracks (perspective warps) per attack face.",
)
@click.option(
    "--bpcer-target",
    type=click.FloatRange(0.0, 0.5),
    default=0.03,
    show_default=True,
    help="The threshold rule: the share of live tracks the thresholds may refuse (several "
    "cues: one common quantile level, the largest keeping the fused gate within it).",
)
@click.option("--noise", type=click.FloatRange(0, 64), default=3.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--plots/--no-plots", default=True, help="Write the PNG plots (needs matplotlib).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
def evaluate_liveness(
    folder: Path,
    config_file: Path | None,
    cue_names: tuple[str, ...],
    labels: Path | None,
    live_videos: tuple[Path, ...],
    samples: Path | None,
    out: Path,
    track_frames: int,
    tracks_per_photo: int,
    moved_tracks: int,
    bpcer_target: float,
    noise: float,
    seed: int,
    plots: bool,
    progress: bool | None,
) -> None:
    """Measure the liveness cues, alone and fused, on FOLDER/real and FOLDER/fake with
    per-face labels: attacks accepted (APCER) and live faces refused (BPCER) per image and
    per track, thresholds chosen by a rule that never sees an attack, leave-one-out
    figures, DET plots."""
    from tqdm import tqdm

    from fr_core.evaluation import liveness as liveness_eval

    registry = build_registry()
    detector = registry.create(ComponentKind.DETECTOR, "yunet")
    cues = []
    if config_file is not None:
        cfg = load_config(config_file)
        detector = _component(cfg, registry, "detector", "yunet")
        for where, kind, block in cfg.components():
            if kind is ComponentKind.ANALYZER:
                candidate = registry.create(kind, block.plugin, block.options, path=where)
                if getattr(candidate, "gates_identity", False):
                    cues.append(candidate)
        if not cues:
            raise click.UsageError(f"{config_file} configures no liveness analyzer")
    else:
        for name in cue_names or ("liveness",):
            cue = registry.create(ComponentKind.ANALYZER, name)
            if not getattr(cue, "gates_identity", False):
                raise click.UsageError(f"--cue {name}: not a liveness analyzer")
            cues.append(cue)
    shown = sys.stderr.isatty() if progress is None else progress
    try:
        report = liveness_eval.evaluate(
            folder,
            detector,
            cues,
            labels=labels,
            samples=samples,
            live_videos=live_videos,
            track_frames=track_frames,
            tracks_per_photo=tracks_per_photo,
            moved_per_photo=moved_tracks,
            bpcer_target=bpcer_target,
            noise=noise,
            seed=seed,
            progress=lambda items: tqdm(list(items), desc="photos", disable=not shown),
        )
    except liveness_eval.LabelsError as exc:
        raise click.ClickException(str(exc)) from None
    for written in liveness_eval.write(report, out, folder.name, with_plots=plots):
        click.echo(f"wrote {written}")
    summary = report.summary()
    for cue, entry in summary["decisions"].items():
        for label in ("rule", "configured"):
            r = entry[label]["all"]
            click.echo(
                f"{cue} at the {label} threshold: attack tracks accepted "
                f"{r['attacks_accepted']}/{r['attack_tracks']}, live tracks refused "
                f"{r['live_refused']}/{r['live_tracks']}"
            )


@main.command()
@optional_config_option
@click.option(
    "--gallery",
    "gallery_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A central-side gallery instead of the device database: JSON lines with user_id, "
    "model and embedding (base64 of little-endian float32), as sync upserts.",
)
@target_far_option
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON to this file (nothing is written otherwise).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def calibrate(
    config_file: Path | None,
    gallery_file: Path | None,
    target_far: float | None,
    report_file: Path | None,
    as_json: bool,
) -> None:
    """Report the operating point for the current gallery.

    For each model: the similarity threshold the device uses, the false accepts to expect
    per 1,000 strangers, what other targets and the fixed 0.363 would give, and the
    enrolments so close to another that they risk being confused (one person enrolled twice,
    or twins). Reads the device database (--config) or a central-side file (--gallery);
    writes nothing unless --report is given.
    """
    from fr_core.pipeline.decision import DecisionPolicy, calibrate_report

    if config_file is None and gallery_file is None:
        raise click.UsageError("give --config (the device database) or --gallery FILE")
    cfg = _config_or_default(config_file, target_far)
    policy = DecisionPolicy.from_config(cfg)
    if gallery_file is not None:
        from fr_core.pipeline.decision import read_gallery_file

        galleries = read_gallery_file(gallery_file)
        registry = build_registry()
    else:
        assert config_file is not None
        _, registry, db = _open_db(config_file, must_exist=True, inspect=True)
        try:
            galleries = dict(sorted(_galleries(db).items()))
        finally:
            db.close()
    report = {
        model: calibrate_report(model, ids, rows, _matcher(cfg, registry), policy)
        for model, (ids, rows) in galleries.items()
    }
    if report_file is not None:
        atomic_write(report_file, json.dumps(report, indent=1).encode())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report:
        click.echo("no enrolments: nothing to calibrate")
    for model, r in report.items():
        op = r["operating_point"]
        click.echo(
            f"{model}: {op['gallery_size']} enrolments, threshold {op['threshold']:.3f} "
            f"({op['method']}"
            + (f", target {op['target_far']}" if op["target_far"] is not None else "")
            + "); expected false accepts per 1,000 "
            f"strangers: {op['expected_false_accepts_per_1000']:.2f}"
        )
        for row in r["targets"]:
            click.echo(f"  target {row['target_far']:<7g} threshold {row['threshold']:.3f}")
        fixed = r["fixed_verification_point"]
        if fixed is not None:
            click.echo(
                f"  a fixed {fixed['threshold']:.3f} would accept "
                f"{fixed['expected_false_accepts_per_1000']:.1f} per 1,000 strangers"
            )
        pairs = r["confusable_pairs"]
        if pairs:
            click.echo(
                f"  {r['confusable_pairs_total']} pairs of enrolments at or above the threshold"
                + (
                    f" (the {len(pairs[:20])} most similar):"
                    if r["confusable_pairs_total"] > 20
                    else ":"
                )
            )
            for p in pairs[:20]:
                click.echo(f"    {p['a']} ~ {p['b']}: {p['similarity']:.3f}")
        else:
            click.echo("  no two enrolments reach the threshold against each other")


@main.command()
@device_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--camera-seconds",
    type=click.FloatRange(min=0.5, max=60),
    default=5.0,
    show_default=True,
    help="How long to wait for the camera's first frames.",
)
def doctor(config_file: Path, as_json: bool, camera_seconds: float) -> None:
    """Check a device before its first run: platform, versions, each model's load (or
    TensorRT engine build) time, the camera, the clock, the data folder, the broker over TLS
    with the device's credentials, and the gallery. Sends no event.

    Exit status: 0 when nothing failed (warnings included), 1 when a check failed.
    """
    from fr_core.app import doctor as dr

    cfg = load_config(config_file)
    register_secret(cfg.api_key_value())
    checks = dr.run_checks(cfg, build_registry(), camera_seconds)
    if as_json:
        click.echo(json.dumps(dr.as_json(checks), indent=2))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
        for c in checks:
            click.echo(f"{marks[c.status]} {c.name:<20} {c.detail} ({c.seconds:.2f} s)")
        click.echo(f"doctor: {dr.worst(checks)}")
    if dr.worst(checks) == "fail":
        raise SystemExit(EXIT_RUNTIME)


# --- reference broker -----------------------------------------------------------------------

BROKER_KEY_ENV = "FR_BROKER_API_KEY"
data_option = click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the broker's database and certificates.",
)


@main.group()
def broker() -> None:
    """The reference broker: the HTTPS broker contract on this machine, for tests and demos.

    Not a production broker: one process, SQLite, no user management.
    """


@broker.command("serve")
@data_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8443,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Server certificate (PEM); default: one made on first run with its own CA.",
)
@click.option(
    "--key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Its private key."
)
@click.option(
    "--client-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Require client certificates signed by this CA (mTLS).",
)
def broker_serve(
    data_dir: Path,
    host: str,
    port: int,
    cert: Path | None,
    key: Path | None,
    client_ca: Path | None,
) -> None:
    """Serve the broker API over TLS until SIGTERM or Ctrl-C.

    Devices authenticate with the API key in $FR_BROKER_API_KEY.
    """

    from fr_core.broker.https import ReferenceBroker

    api_key = os.environ.get(BROKER_KEY_ENV)
    if not api_key:
        raise ConfigError(f"set {BROKER_KEY_ENV} to the API key devices must present")
    if (cert is None) != (key is None):
        raise ConfigError("--cert and --key go together")
    register_secret(api_key)
    ref = ReferenceBroker(
        data_dir,
        api_key=api_key,
        host=host,
        port=port,
        certfile=cert,
        keyfile=key,
        client_ca=client_ca,
    ).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    click.echo(f"reference broker on {ref.url}")
    if ref.ca_path:
        click.echo(f"devices must trust {ref.ca_path}")
    sys.stdout.flush()
    done.wait()
    ref.stop()
    click.echo("reference broker stopped")


@broker.command("bridge")
@data_option
@click.option("--mqtt-url", required=True, help="The running mosquitto: mqtts://host:port.")
@click.option(
    "--ca",
    "ca_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CA that signed mosquitto's certificate.",
)
@click.option("--username", default="fr-bridge", show_default=True, help="Bridge MQTT user.")
def broker_bridge(data_dir: Path, mqtt_url: str, ca_file: Path, username: str) -> None:
    """Serve the MQTT side (docs/mqtt.md) through a running mosquitto until SIGTERM.

    Events and heartbeats land in the same ledger as the HTTPS side; sync requests are
    answered from the same enrolments. The password comes from $FR_BRIDGE_PASSWORD.
    """

    from fr_core.broker.mqtt import MqttBridge

    password = os.environ.get("FR_BRIDGE_PASSWORD")
    if not password:
        raise ConfigError("set FR_BRIDGE_PASSWORD to the bridge user's MQTT password")
    parts = urlsplit(mqtt_url)
    if parts.scheme != "mqtts" or not parts.hostname:
        raise ConfigError(f"--mqtt-url must be mqtts://host:port, got {mqtt_url!r}")
    register_secret(password)
    bridge = MqttBridge(
        _store(data_dir), parts.hostname, parts.port or 8883, password, ca_file, username=username
    ).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    click.echo(f"bridge connected to {parts.hostname}:{parts.port or 8883}")
    sys.stdout.flush()
    done.wait()
    bridge.stop()
    click.echo("bridge stopped")


def _store(data_dir: Path) -> Any:
    from fr_core.broker.store import BrokerStore

    return BrokerStore(data_dir / "broker.db")


@broker.command("enrol")
@data_option
@click.argument("user_id")
@click.option(
    "--embedding",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A .npy file holding the embedding.",
)
@click.option(
    "--photo",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A photo with exactly one face, embedded with --detector and --embedder.",
)
@click.option("--model", default=None, help="Model name (with --embedding; default SFace).")
@click.option("--detector", default="yunet", show_default=True, help="Detector plugin.")
@click.option("--embedder", default="sface", show_default=True, help="Embedder plugin.")
@click.option("--name", "display_name", help="Display name (sent only to dev-mode devices).")
def broker_enrol(
    data_dir: Path,
    user_id: str,
    embedding: Path | None,
    photo: Path | None,
    model: str | None,
    detector: str,
    embedder: str,
    display_name: str | None,
) -> None:
    """Enrol (or re-enrol) an employee: from a photo or a ready embedding."""

    if (embedding is None) == (photo is None):
        raise click.UsageError("give exactly one of --embedding and --photo")
    check_user_id(user_id)
    if embedding is not None:
        try:
            vec = np.load(embedding, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FrEdgeError(f"{embedding} is not a .npy array: {exc}") from None
        vec = check_embedding(np.asarray(vec, dtype=np.float32).reshape(-1))
        model_name = check_model(model or "SFace")
        det_name = None
    else:
        assert photo is not None
        vec, model_name, det_name = _embed_photo(photo, detector, embedder, user_id)
    version = _store(data_dir).enrol(user_id, vec, model_name, det_name, display_name)
    click.echo(f"enrolled {user_id} ({model_name}, {vec.size} values) as version {version}")


def _embed_photo(photo: Path, detector: str, embedder: str, user_id: str) -> tuple[Any, str, str]:
    """The photo embedded by the central kit (fr_core.enrolment: the devices' computation
    and enrolment rules)."""

    registry = build_registry()
    kit = EnrolmentKit(
        registry.create(ComponentKind.DETECTOR, detector),
        registry.create(ComponentKind.EMBEDDER, embedder),
        detector,
    )
    record = kit.embed_photo(photo, user_id)
    return record.embedding, record.model, detector


@broker.command("import")
@data_option
@click.argument("records", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--model-dim",
    "model_dims",
    multiple=True,
    default=("SFace:128",),
    show_default=True,
    help="MODEL:DIM the devices accept (repeat for several).",
)
def broker_import(data_dir: Path, records: Path, model_dims: tuple[str, ...]) -> None:
    """Enrol every record of a file `fr-edge embed` wrote (JSON lines or .csv), after checking
    the whole file as devices would: nothing is enrolled if any record is refused."""

    models: dict[str, int] = {}
    for item in model_dims:
        name, _, dim = item.partition(":")
        if not name or not dim.isdigit():
            raise click.UsageError(f"--model-dim {item!r}: write MODEL:DIM, e.g. SFace:128")
        models[name] = int(dim)
    rows = list(enrolment.read_records(records))
    result = enrolment.check_records(rows, models)
    for line, why in result.problems:
        click.echo(f"{records}:{line}: refused: {why}", err=True)
    if result.problems:
        raise FrEdgeError(f"{len(result.problems)} records refused: nothing imported")
    items = []
    for _, record in rows:
        assert not isinstance(record, str)
        vec = decode_embedding(str(record["embedding"]), int(record["dim"]))
        detector = record.get("detector")
        items.append((str(record["user_id"]), vec, str(record["model"]), detector, None))
    version = _store(data_dir).enrol_many(items)  # one transaction: all or nothing
    click.echo(f"imported {result.accepted} enrolments; broker at version {version}")


@broker.command("remove")
@data_option
@click.argument("user_id")
def broker_remove(data_dir: Path, user_id: str) -> None:
    """Remove an employee: devices delete the embedding on their next sync."""
    version = _store(data_dir).remove(user_id)
    if version is None:
        raise FrEdgeError(f"{user_id} is not enrolled")
    click.echo(f"removed {user_id} as version {version}")


@broker.command("events")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def broker_events(data_dir: Path, as_json: bool) -> None:
    """List the events received, once each, in arrival order."""
    ledger = _store(data_dir).ledger()
    if as_json:
        click.echo(json.dumps(ledger, indent=2))
        return
    for e in ledger:
        click.echo(
            f"{e['timestamp']}  {e['event_id']}  {e['event_type']:9s} "
            f"{e.get('user_id') or '-':12s} confidence {e['confidence']:.2f}  "
            f"image {e['image_bytes'] / 1024:.1f} KiB  deliveries {e['deliveries']}"
        )
    click.echo(f"{len(ledger)} events")


@broker.command("compact")
@data_option
def broker_compact(data_dir: Path) -> None:
    """Forget superseded changes and tombstones (devices older than now resync fully)."""
    store = _store(data_dir)
    store.compact()
    click.echo(f"compacted at version {store.version()}")


# --- demo ---------------------------------------------------------------------------------


@main.command()
@click.option(
    "--frames",
    type=click.IntRange(min=10),
    default=60,
    show_default=True,
    help="Length of the generated clip (or frames read from --source).",
)
@click.option("--source", help="A video for the simulated camera instead of the generated one.")
@click.option(
    "--enrol",
    "enrolments",
    multiple=True,
    metavar="ID=PHOTO",
    help="Enrol an employee from a photo (repeatable); default: a sample portrait.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the broker and device keep their files (default: a temp folder).",
)
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an annotated video (boxes, track ids, who, fps) to this .mp4/.avi file.",
)
def demo(
    frames: int,
    source: str | None,
    enrolments: tuple[str, ...],
    workdir: Path | None,
    preview: Path | None,
) -> None:
    """Run the whole loop on this machine: no camera, no config, no network needed.

    Starts the reference broker on loopback over TLS, enrols sample faces there, runs the
    device on the simulated camera and prints each event as the broker receives it.
    """
    from fr_core.app.demo import run_demo

    people = []
    for item in enrolments:
        uid, sep, photo = item.partition("=")
        if not sep or not uid or not photo:
            raise click.BadParameter(f"{item!r}: expected ID=PHOTO", param_hint="--enrol")
        people.append((uid, Path(photo)))
    run_demo(
        build_registry(),
        frames=frames,
        source=source,
        enrol=people or None,
        workdir=workdir,
        preview=preview,
        echo=click.echo,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
