"""fr-edge core: the engine, the plugin contracts and the original module's API.

The names the original IoT integration module exported are importable from here::

    from fr_core import DatabaseManager, EventValidator, SyncManager, compress_image_for_event

Plugins implement hooks marked with :data:`hookimpl` (see docs/plugin_hooks.md).
"""

from fr_core.client import IoTClient, IoTClientConfig
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
from fr_core.imaging import compress_image_for_event
from fr_core.storage import (
    DatabaseManager,
    DevModeError,
    OutboxFullError,
    OutboxPolicy,
    StorageError,
    SyncError,
)
from fr_core.sync import SyncManager, SyncManagerFactory
from fr_core.validator import EventValidator

__version__ = "0.1.0"

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
