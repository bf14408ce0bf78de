"""fr-edge core: the engine, the plugin contracts and the original module's API.

The names the original IoT integration module exported are importable from here::

    from fr_core import DatabaseManager, EventValidator, SyncManager, compress_image_for_event

Plugins implement hooks marked with :data:`hookimpl` (see docs/plugin_hooks.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers; at run time they load on first use
    from fr_core.delivery.client import IoTClient, IoTClientConfig
    from fr_core.delivery.imaging import compress_image_for_event
    from fr_core.enrolment.sync import SyncManager, SyncManagerFactory
    from fr_core.errors import (
        ComponentUnavailableError,
        ConfigError,
        FrEdgeError,
        PluginError,
        TransportAuthError,
        TransportError,
        TransportProtocolError,
        TransportTLSError,
        TransportUnavailable,
        UnknownComponentError,
    )
    from fr_core.events import (
        EMOTION_CODES,
        EmotionEvent,
        FacialIdEvent,
        distance_to_confidence,
        parse_event,
    )
    from fr_core.hookspecs import hookimpl
    from fr_core.pipeline.validator import EventValidator
    from fr_core.storage import (
        DatabaseManager,
        DevModeError,
        OutboxFullError,
        OutboxPolicy,
        StorageError,
        SyncError,
    )

#: name -> module that defines it. Loaded on first access (PEP 562), so importing a part of
#: fr_core (a plugin's ``from fr_core import hookimpl``, the pytest plugin) does not import
#: the whole engine, storage and client.
_LAZY = {
    "IoTClient": "fr_core.delivery.client",
    "IoTClientConfig": "fr_core.delivery.client",
    "ComponentUnavailableError": "fr_core.errors",
    "ConfigError": "fr_core.errors",
    "FrEdgeError": "fr_core.errors",
    "PluginError": "fr_core.errors",
    "TransportAuthError": "fr_core.errors",
    "TransportError": "fr_core.errors",
    "TransportProtocolError": "fr_core.errors",
    "TransportTLSError": "fr_core.errors",
    "TransportUnavailable": "fr_core.errors",
    "UnknownComponentError": "fr_core.errors",
    "EMOTION_CODES": "fr_core.events",
    "EmotionEvent": "fr_core.events",
    "FacialIdEvent": "fr_core.events",
    "distance_to_confidence": "fr_core.events",
    "parse_event": "fr_core.events",
    "hookimpl": "fr_core.hookspecs",
    "compress_image_for_event": "fr_core.delivery.imaging",
    "DatabaseManager": "fr_core.storage",
    "DevModeError": "fr_core.storage",
    "OutboxFullError": "fr_core.storage",
    "OutboxPolicy": "fr_core.storage",
    "StorageError": "fr_core.storage",
    "SyncError": "fr_core.storage",
    "SyncManager": "fr_core.enrolment.sync",
    "SyncManagerFactory": "fr_core.enrolment.sync",
    "EventValidator": "fr_core.pipeline.validator",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fr_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.2.0"

__all__ = [
    "EMOTION_CODES",
    "ComponentUnavailableError",
    "ConfigError",
    "DatabaseManager",
    "DevModeError",
    "EmotionEvent",
    "EventValidator",
    "FacialIdEvent",
    "FrEdgeError",
    "IoTClient",
    "IoTClientConfig",
    "OutboxFullError",
    "OutboxPolicy",
    "PluginError",
    "StorageError",
    "SyncError",
    "SyncManager",
    "SyncManagerFactory",
    "TransportAuthError",
    "TransportError",
    "TransportProtocolError",
    "TransportTLSError",
    "TransportUnavailable",
    "UnknownComponentError",
    "__version__",
    "compress_image_for_event",
    "distance_to_confidence",
    "hookimpl",
    "parse_event",
]
