"""Exception hierarchy of fr-edge.

Every error the framework raises on bad input derives from :class:`FrEdgeError`, so the CLI can
print it as one clear line and callers can catch one type. Messages name what was wrong and what
is allowed; they never contain secrets.
"""

from __future__ import annotations


class FrEdgeError(Exception):
    """Base class of every fr-edge error."""

    exit_code = 1


class ConfigError(FrEdgeError, ValueError):
    """A configuration file or value is invalid.

    ``problems`` holds one ``(key_path, message)`` pair per problem found.
    """

    exit_code = 2

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = problems or []


class PluginError(FrEdgeError):
    """A plugin could not be loaded, registered or used."""

    exit_code = 3


class UnknownComponentError(PluginError, ConfigError):
    """A component name in the config matches no registered plugin component."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        ConfigError.__init__(self, message)


class ComponentUnavailableError(PluginError):
    """The component exists but cannot run on this machine (missing library or hardware)."""


class TransportError(FrEdgeError):
    """A transport could not complete a call. Messages never contain secrets."""


class TransportUnavailable(TransportError):
    """The broker is unreachable or temporarily refusing (network, timeout, 429, 5xx): retry
    later. ``retry_after`` is the broker's hint in seconds, when it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransportAuthError(TransportError):
    """The broker refused the credentials (HTTP 401/403, MQTT bad username or password, a
    client certificate refused): retrying will not help until the configuration changes."""


class TransportTLSError(TransportError):
    """TLS failed: the broker's certificate is not trusted, expired, or for another host."""


class TransportProtocolError(TransportError):
    """The broker answered something the contract does not allow (a redirect, a 4xx, bad
    JSON)."""
