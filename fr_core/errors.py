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
