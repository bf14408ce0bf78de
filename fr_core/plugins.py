"""Plugin manager factory and the typed component registry over it.

No plugin manager is built at import time: :func:`get_plugin_manager` makes a fresh one each
call, so tests and embedding applications control exactly which plugins are loaded.

Plugins come from the ``fr_core`` entry-point group (the in-tree plugins use it too) and from
``extra_plugins`` passed in code. ``FR_DISABLED_PLUGINS`` (comma-separated entry-point or plugin
names) blocks plugins before they are imported. A plugin that fails to import, or whose
registration hook raises, does not stop the others: its error is kept in
:attr:`PluginManager.load_errors` and shown by ``fr-edge plugins`` and by the error raised when
config asks for one of its components.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pluggy
from pydantic import BaseModel, ValidationError

from fr_core import hookspecs
from fr_core.config import format_validation_error
from fr_core.errors import (
    ComponentUnavailableError,
    ConfigError,
    FrEdgeError,
    PluginError,
    UnknownComponentError,
)
from fr_core.interfaces import PROTOCOLS, ComponentKind
from fr_core.logsetup import redact

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fr_core"
DISABLE_ENV = "FR_DISABLED_PLUGINS"


class RegisterCallback(Protocol):
    """The callback every registration hook receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        config_model: type[BaseModel] | None = None,
        *,
        unavailable: str | None = None,
        description: str = "",
        cpu_fallback: str | None = None,
        url_schemes: Mapping[str, bool] | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class PluginLoadError:
    """A plugin that could not be loaded or registered, with the reason."""

    plugin: str
    distribution: str | None
    error: str
    detail: str = ""  # full traceback, for --debug


@dataclass(frozen=True)
class Registration:
    """One component a plugin registered."""

    kind: ComponentKind
    name: str
    factory: Callable[..., Any]
    config_model: type[BaseModel] | None
    plugin: str
    distribution: str | None
    unavailable: str | None = None
    description: str = ""
    cpu_fallback: str | None = None  # what ``fallback: cpu`` runs instead of it
    url_schemes: Mapping[str, bool] | None = None  # transports: broker_url scheme -> encrypted
    # what every component it builds has, as attribute -> value (checked at build), e.g.
    # {"model_name": "SFace"}, {"gates_identity": True}: a fallback must provide the same
    provides: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class BuildContext:
    """What a component factory gets besides its own config.

    ``app_config`` is the validated :class:`fr_core.config.AppConfig` (or ``None`` when a
    component is built outside an engine); ``registry`` lets a component build the parts it
    needs (an embedder its accelerator, say).
    """

    registry: Registry
    app_config: Any = None
    extras: Mapping[str, Any] = field(default_factory=dict)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the load errors and distributions of the plugins it loaded."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.load_errors: list[PluginLoadError] = []
        self.disabled: list[str] = []
        self.distributions: dict[str, str] = {}  # plugin name -> "dist version"


def disabled_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    raw = (env if env is not None else os.environ).get(DISABLE_ENV, "")
    return [n.strip() for n in raw.split(",") if n.strip()]


def get_plugin_manager(
    *,
    load_entrypoints: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    disabled: Iterable[str] | None = None,
) -> PluginManager:
    """Build a new plugin manager.

    ``extra_plugins`` are ``(name, plugin object)`` pairs registered after the entry points
    (tests and embedding applications use this). ``disabled`` defaults to the names in
    ``FR_DISABLED_PLUGINS``.
    """
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    blocked = list(disabled) if disabled is not None else disabled_from_env()
    for name in blocked:
        pm.set_blocked(name)
    pm.disabled = blocked
    if load_entrypoints:
        _load_entry_points(pm)
    for name, plugin in extra_plugins:
        _register(pm, plugin, name, None)
    _drop_pending(pm)
    return pm


def _drop_pending(pm: PluginManager) -> None:
    """``check_pending``: a plugin implementing a hook that does not exist (a typo, or a hook
    of a newer fr-edge) is unregistered and reported, instead of stopping everything."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            pm.load_errors.append(PluginLoadError(name, pm.distributions.get(name), _one_line(exc)))
            log.warning("plugin %s unregistered: %s", name, _one_line(exc))
            pm.unregister(exc.plugin)


def _load_entry_points(pm: PluginManager) -> None:
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else None
        if pm.is_blocked(ep.name):
            log.info("plugin %s disabled by %s", ep.name, DISABLE_ENV)
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            pm.load_errors.append(
                PluginLoadError(ep.name, dist, _one_line(exc), traceback.format_exc())
            )
            log.warning("plugin %s could not be imported: %s", ep.name, _one_line(exc))
            continue
        _register(pm, plugin, ep.name, dist)


def _register(pm: PluginManager, plugin: object, name: str, dist: str | None) -> None:
    if pm.is_blocked(name):
        return
    existing = pm.get_plugin(name)
    if existing is not None:
        if existing is plugin:
            return
        raise PluginError(
            f"two plugins are named {name!r} ({pm.distributions.get(name) or 'in code'} and "
            f"{dist or 'in code'}); plugin names must be unique: uninstall or disable one "
            f"with {DISABLE_ENV}={name}"
        )
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        pm.load_errors.append(PluginLoadError(name, dist, _one_line(exc), traceback.format_exc()))
        return
    if dist:
        pm.distributions[name] = dist


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_UNDECLARED = object()


class Registry:
    """Every component registered by the loaded plugins, by kind and name.

    Built by calling each registration hook implementation with a ``register`` callback that
    knows which plugin is calling. The same name registered twice for one kind is an error
    naming both plugins.
    """

    def __init__(self, pm: PluginManager) -> None:
        self.pm = pm
        self._items: dict[ComponentKind, dict[str, Registration]] = {k: {} for k in ComponentKind}
        self.load_errors: list[PluginLoadError] = list(pm.load_errors)
        for kind in ComponentKind:
            caller = getattr(pm.hook, kind.hook_name)
            for impl in caller.get_hookimpls():
                self._collect(kind, impl)

    def _collect(self, kind: ComponentKind, impl: pluggy.HookImpl) -> None:
        plugin_name = impl.plugin_name
        dist = self.pm.distributions.get(plugin_name)

        def register(
            name: str,
            factory: Callable[..., Any],
            config_model: type[BaseModel] | None = None,
            *,
            unavailable: str | None = None,
            description: str = "",
            cpu_fallback: str | None = None,
            url_schemes: Mapping[str, bool] | None = None,
            provides: Mapping[str, Any] | None = None,
        ) -> None:
            if not isinstance(name, str) or not name.strip():
                raise PluginError(
                    f"plugin {plugin_name!r} registered a {kind.value} without a name"
                )
            if not callable(factory):
                raise PluginError(
                    f"plugin {plugin_name!r}: the factory of {kind.value} {name!r} is not callable"
                )
            if config_model is not None and not (
                isinstance(config_model, type) and issubclass(config_model, BaseModel)
            ):
                raise PluginError(
                    f"plugin {plugin_name!r}: the config model of {kind.value} {name!r} "
                    "must be a pydantic BaseModel subclass or None"
                )
            other = self._items[kind].get(name)
            if other is not None:
                raise PluginError(
                    f"{kind.value} name {name!r} is registered twice: by plugin {other.plugin!r}"
                    f" and by plugin {plugin_name!r}; disable one with {DISABLE_ENV}"
                )
            self._items[kind][name] = Registration(
                kind,
                name,
                factory,
                config_model,
                plugin_name,
                dist,
                unavailable,
                description,
                cpu_fallback,
                dict(url_schemes) if url_schemes else None,
                dict(provides) if provides else None,
            )

        try:
            kwargs = {"register": register} if "register" in impl.argnames else {}
            impl.function(**kwargs)
        except PluginError:
            raise
        except Exception as exc:
            self.load_errors.append(
                PluginLoadError(
                    plugin_name,
                    dist,
                    f"{impl.function.__name__} failed: {_one_line(exc)}",
                    traceback.format_exc(),
                )
            )
            log.warning("plugin %s failed to register %ss: %s", plugin_name, kind.value, exc)

    # --- queries ---

    def names(self, kind: ComponentKind, *, available_only: bool = False) -> list[str]:
        items = self._items[kind].values()
        return sorted(r.name for r in items if not (available_only and r.unavailable))

    def registrations(self, kind: ComponentKind | None = None) -> list[Registration]:
        kinds = [kind] if kind else list(ComponentKind)
        return [r for k in kinds for _, r in sorted(self._items[k].items())]

    def get(self, kind: ComponentKind, name: str) -> Registration:
        reg = self._items[kind].get(name)
        if reg is None:
            raise UnknownComponentError(self._unknown_message(kind, name))
        return reg

    def _unknown_message(self, kind: ComponentKind, name: str) -> str:
        available = self.names(kind, available_only=True)
        msg = f"unknown {kind.value} {name!r}; available: {', '.join(available) or 'none'}"
        absent = [r for r in self.registrations(kind) if r.unavailable]
        if absent:
            msg += "; not usable here: " + "; ".join(f"{r.name} ({r.unavailable})" for r in absent)
        if self.load_errors:
            why = "; ".join(
                f"plugin {e.plugin!r} failed to load ({e.error})" for e in self.load_errors
            )
            msg += f". Some plugins are unavailable: {why}"
        if self.pm.disabled:
            msg += f". Disabled by {DISABLE_ENV}: {', '.join(self.pm.disabled)}"
        return msg

    def scheme_transport(self, scheme: str) -> tuple[str, bool] | None:
        """(transport name, encrypted) of the installed transport that declares ``scheme``
        for ``broker_url`` (register(..., url_schemes={scheme: encrypted}))."""
        for reg in self.registrations(ComponentKind.TRANSPORT):
            if reg.url_schemes and scheme in reg.url_schemes:
                return reg.name, bool(reg.url_schemes[scheme])
        return None

    def create_block(
        self,
        kind: ComponentKind,
        block: Any,
        context: BuildContext | None = None,
        *,
        path: str = "",
        options: Mapping[str, Any] | BaseModel | None = None,
        fallback_options: Mapping[str, Any] | BaseModel | None = None,
        log_fallback: bool = True,
    ) -> tuple[Any, dict[str, str] | None]:
        """Build a config block's component; if it cannot start and the block names a
        ``fallback``, build that instead and say so (logged). Returns (component, None) or
        (fallback component, {"configured", "running", "reason"}); when both fail, the error
        names both failures. ``options``: already validated options of the block;
        ``log_fallback=False`` for a caller that reports the fallback itself (doctor)."""
        primary = block.options if options is None else options
        try:
            return self.create(kind, block.plugin, primary, context, path=path), None
        except FrEdgeError as exc:
            if block.fallback is None:
                raise
            name, inherited = self.fallback_of(kind, block, path)
            reason = str(exc)
            (log.error if log_fallback else log.debug)(
                "%s: %s %r cannot start (%s); running %r instead (fallback)",
                path or kind.value,
                kind.value,
                block.plugin,
                reason,
                name,
            )
            chosen = inherited if fallback_options is None else fallback_options
            try:
                component = self.create(kind, name, chosen, context, path=f"{path}.fallback")
            except FrEdgeError as second:
                raise type(second)(
                    f"{path or kind.value}: {kind.value} {block.plugin!r} cannot start "
                    f"({reason}); its fallback {name!r} cannot start either ({second})"
                ) from None
            # reported in heartbeats, which leave the device: no secret, no echoed input
            masked = re.sub(r"input_value=('[^']*'|\S+)", "input_value=...", redact(reason))
            return component, {"configured": block.plugin, "running": name, "reason": masked[:500]}

    def fallback_of(
        self, kind: ComponentKind, block: Any, path: str = ""
    ) -> tuple[str, dict[str, Any]]:
        """The component (name, options) that runs when ``block``'s cannot start: ``fallback:
        cpu`` is the CPU counterpart its registration declares; options default to those of
        the block the fallback's config model has."""
        where = f"{path}.fallback" if path else "fallback"

        def refuse(msg: str) -> ConfigError:
            return ConfigError(f"{where}: {msg}", [(where, msg)])

        name = block.fallback
        if name == "cpu":
            name = self.get(kind, block.plugin).cpu_fallback
            if name is None:
                raise refuse(
                    f"{kind.value} {block.plugin!r} declares no CPU counterpart; name the "
                    f"fallback (available: {', '.join(self.names(kind))})"
                )
        if name == block.plugin:
            raise refuse(f"{name!r} cannot be its own fallback")
        if name not in self._items[kind]:
            raise refuse(self._unknown_message(kind, name))
        fallback = self._items[kind][name]
        if fallback.unavailable:
            raise refuse(
                f"{kind.value} {name!r} is not available here either: {fallback.unavailable}"
            )
        primary = self._items[kind].get(block.plugin)
        for key, value in (primary.provides or {}).items() if primary is not None else ():
            has = (fallback.provides or {}).get(key, _UNDECLARED)
            if has != value:
                said = "does not declare it" if has is _UNDECLARED else f"has {has!r}"
                risk = {
                    "gates_identity": " (running it would turn the liveness gate off)"
                    if value
                    else "",
                    "model_name": " (its embeddings would not match the gallery)",
                }.get(key, "")
                raise refuse(
                    f"{kind.value} {name!r} cannot stand in for {block.plugin!r}: that one "
                    f"has {key}={value!r}, {name!r} {said}{risk}"
                )
        if block.fallback_options is not None:
            return name, dict(block.fallback_options)
        # inherited: the options both models have, less those the primary's model declares
        # as its own (FALLBACK_EXCLUDE) and renamed where it says so (FALLBACK_RENAME)
        model = fallback.config_model
        fields = set(model.model_fields) if model is not None else set()
        source = primary.config_model if primary is not None else None
        exclude = set(getattr(source, "FALLBACK_EXCLUDE", ()))
        rename = dict(getattr(source, "FALLBACK_RENAME", {}))
        out = {}
        for key, value in block.options.items():
            target = rename.get(key, key)
            if key not in exclude and target in fields:
                out[target] = value
        return name, out

    def validate_options(
        self, kind: ComponentKind, name: str, options: Mapping[str, Any], path: str = ""
    ) -> BaseModel | None:
        """Validate a component's config block with the model its plugin registered."""
        reg = self.get(kind, name)
        if reg.config_model is None:
            if options:
                keys = ", ".join(sorted(options))
                where = f"{path}: " if path else ""
                raise ConfigError(
                    f"{where}{kind.value} {name!r} takes no options, got: {keys}",
                    [(path, f"unexpected options {keys}")],
                )
            return None
        try:
            return reg.config_model.model_validate(dict(options))
        except ValidationError as exc:
            problems = format_validation_error(exc, prefix=path, model=reg.config_model)
            text = "; ".join(f"{p}: {m}" for p, m in problems)
            raise ConfigError(
                f"invalid options for {kind.value} {name!r}: {text}", problems
            ) from None

    def create(
        self,
        kind: ComponentKind,
        name: str,
        options: Mapping[str, Any] | BaseModel | None = None,
        context: BuildContext | None = None,
        *,
        path: str = "",
    ) -> Any:
        """Validate the options, build the component, and check it has the kind's interface."""
        reg = self.get(kind, name)
        if reg.unavailable:
            raise ComponentUnavailableError(
                f"{kind.value} {name!r} (plugin {reg.plugin!r}) is not available here: "
                f"{reg.unavailable}"
            )
        config = (
            options
            if isinstance(options, BaseModel)
            else self.validate_options(kind, name, options or {}, path)
        )
        ctx = context or BuildContext(registry=self)
        try:
            component = reg.factory(config, ctx)
        except (PluginError, ConfigError):
            raise
        except Exception as exc:
            raise PluginError(
                f"{kind.value} {name!r} (plugin {reg.plugin!r}) failed to start: {_one_line(exc)}"
            ) from exc
        protocol = PROTOCOLS[kind]
        if not isinstance(component, protocol):
            wanted = [
                n
                for n in (*vars(protocol), *getattr(protocol, "__annotations__", {}))
                if not n.startswith("_")
            ]
            missing = sorted({n for n in wanted if not hasattr(component, n)})
            raise PluginError(
                f"{kind.value} {name!r} (plugin {reg.plugin!r}) built a "
                f"{type(component).__name__}, which lacks the {protocol.__name__} interface"
                + (f": no {', '.join(missing)}" if missing else "")
                + " (see docs/plugin_hooks.md)"
            )
        for key, value in (reg.provides or {}).items():
            if getattr(component, key, _UNDECLARED) != value:
                raise PluginError(
                    f"{kind.value} {name!r} (plugin {reg.plugin!r}) registered {key}={value!r} "
                    f"but built a {type(component).__name__} with "
                    f"{key}={getattr(component, key, None)!r}"
                )
        return component


def build_registry(
    *,
    extra_plugins: Iterable[tuple[str, object]] = (),
    load_entrypoints: bool = True,
    disabled: Iterable[str] | None = None,
) -> Registry:
    """Shortcut: a new plugin manager and the registry over it."""
    pm = get_plugin_manager(
        load_entrypoints=load_entrypoints, extra_plugins=extra_plugins, disabled=disabled
    )
    return Registry(pm)
