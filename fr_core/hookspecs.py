"""Hook specifications of fr-edge.

Two families of hooks:

* Registration hooks, one per component kind. Each receives a ``register`` callback
  (:class:`fr_core.plugins.RegisterCallback`) and calls it once per component it provides::

      register(name, factory, config_model)

  ``factory(config, context)`` builds the component from the validated ``config_model``
  instance and a :class:`fr_core.plugins.BuildContext`.

* Lifecycle hooks, called by the engine: start, stop, and an event about to be queued.

Hooks are always called with keyword arguments. The exact signatures are documented in
docs/plugin_hooks.md; a test keeps that file in step with this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from fr_core.events import AnyEvent
    from fr_core.modelfiles import ModelFile
    from fr_core.pipeline.engine import Engine
    from fr_core.plugins import RegisterCallback

PROJECT_NAME = "fr_core"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- registration hooks -------------------------------------------------------------------


@hookspec
def fr_register_detectors(register: RegisterCallback) -> None:
    """Register face detectors (:class:`fr_core.interfaces.Detector`)."""


@hookspec
def fr_register_embedders(register: RegisterCallback) -> None:
    """Register face embedders (:class:`fr_core.interfaces.Embedder`)."""


@hookspec
def fr_register_matchers(register: RegisterCallback) -> None:
    """Register gallery matchers (:class:`fr_core.interfaces.Matcher`)."""


@hookspec
def fr_register_transports(register: RegisterCallback) -> None:
    """Register broker transports (:class:`fr_core.interfaces.Transport`)."""


@hookspec
def fr_register_storages(register: RegisterCallback) -> None:
    """Register storage back-ends (:class:`fr_core.interfaces.Storage`)."""


@hookspec
def fr_register_camera_sources(register: RegisterCallback) -> None:
    """Register camera sources (:class:`fr_core.interfaces.CameraSource`)."""


@hookspec
def fr_register_telemetry(register: RegisterCallback) -> None:
    """Register platform telemetry providers (:class:`fr_core.interfaces.Telemetry`)."""


@hookspec
def fr_register_accelerators(register: RegisterCallback) -> None:
    """Register compute accelerators (:class:`fr_core.interfaces.Accelerator`)."""


@hookspec
def fr_register_analyzers(register: RegisterCallback) -> None:
    """Register face analyzers, such as emotion (:class:`fr_core.interfaces.Analyzer`)."""


@hookspec
def fr_register_key_providers(register: RegisterCallback) -> None:
    """Register device-key providers (:class:`fr_core.interfaces.KeyProvider`), named in a
    storage block's ``key.provider``."""


# --- lifecycle hooks ----------------------------------------------------------------------


@hookspec
def fr_engine_started(engine: Engine) -> None:
    """Called once the engine has built its components and before the first frame is read."""


@hookspec
def fr_engine_stopping(engine: Engine) -> None:
    """Called once when the engine begins to stop, before components are closed."""


@hookspec
def fr_model_files() -> list[ModelFile]:
    """The model files this plugin needs that no package ships (weights fetched from their
    original repository): each with its group, pinned URL, SHA-256 and size. ``fr-edge
    models list`` and ``fr-edge models fetch`` work on the union of all plugins' lists."""
    return []


@hookspec
def fr_event_before_queue(event: AnyEvent, engine: Engine | None) -> bool | None:
    """Called for every event just before it is written to the outbox.

    An implementation may enrich the event by changing ``event.metadata`` in place (the core
    fields are validated again afterwards). Returning ``False`` vetoes the event: it is not
    queued and the veto is logged with the vetoing plugin's name. ``None`` or ``True`` lets it
    through. ``engine`` is None when the event does not come from an engine (an event
    queued through the client API directly).
    """
