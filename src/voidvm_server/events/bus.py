"""The in-process fan-out of events that are already written (services/event_log.py writes them).

Listeners are called synchronously, in the order events are delivered. A subscriber too slow to
keep up loses its oldest events rather than slowing the publisher (it can resume from the
database by id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Event:
    id: int  # from the database: rising, never reused
    kind: str  # "vm-status", "system-event" or "operation"
    vm_id: str | None
    owner_id: str | None
    data: dict[str, Any]
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


Listener = Callable[[Event], None]
log = logging.getLogger(__name__)


class EventBus:
    def __init__(self) -> None:
        self._listeners: set[Listener] = set()

    def deliver(self, event: Event) -> None:
        """Hand `event` to every listener. It is written already: one listener's failure is
        logged and never reaches the writer, nor keeps the event from the other listeners."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("A listener of event %d failed", event.id)

    def listen(self, listener: Listener) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def queue(self, maxsize: int = 1000) -> tuple[asyncio.Queue[Event], Callable[[], None]]:
        """A queue fed with every event from now on, and the function that stops it."""
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize)

        def feed(event: Event) -> None:
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

        return q, self.listen(feed)
