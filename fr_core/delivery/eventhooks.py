"""The ``fr_event_before_queue`` step: every event, from the engine or from
``IoTClient.send_event``, is offered to the plugins' event hooks before it is queued."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fr_core.events import AnyEvent as Event
from fr_core.events import parse_event

if TYPE_CHECKING:
    from fr_core.pipeline.engine import Engine

log = logging.getLogger(__name__)


def run_event_hooks(
    pm: Any, event: Event, engine: Engine | None = None
) -> tuple[Event | None, int]:
    """Run the ``fr_event_before_queue`` hooks; returns (the event, or None if vetoed, and
    how many plugins left it invalid).

    Each plugin sees the event as the previous one left it. A plugin that raises, or whose
    enrichment makes the payload invalid, is logged and its changes are undone: a faulty
    plugin never costs an event.
    """
    invalid = 0
    hook = pm.hook.fr_event_before_queue
    for impl in reversed(hook.get_hookimpls()):  # the order pluggy calls them in
        before = event.model_copy(deep=True)
        try:
            offered = {"event": event, "engine": engine}
            verdict = impl.function(**{a: offered[a] for a in impl.argnames})
            checked = parse_event(event.to_dict())
        except ValidationError as exc:
            invalid += 1
            log.error(
                "plugin %s made event %s invalid (%s); its changes are undone",
                impl.plugin_name,
                before.event_id,
                _errors(exc),
            )
            event = before
            continue
        except Exception as exc:
            log.error(
                "plugin %s failed in fr_event_before_queue (%s); event %s kept without its changes",
                impl.plugin_name,
                exc,
                before.event_id,
            )
            event = before
            continue
        if verdict is False:
            log.info("event %s vetoed by plugin %s", event.event_id, impl.plugin_name)
            return None, invalid
        event = checked
    return event, invalid


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
