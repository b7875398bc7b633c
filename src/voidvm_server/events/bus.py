"""An in-process event bus with monotonically increasing ids and a bounded replay buffer.

Subscribers get their own bounded queue; a subscriber too slow to keep up loses its oldest
events rather than slowing the publisher (it can resync from the replay buffer by id).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Event:
    id: int
    kind: str  # "vm-status" or "system-event"
    vm_id: str | None
    owner_id: str | None
    data: dict[str, Any]
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self, replay_size: int = 2048, first_id: int | None = None) -> None:
        # By default ids start from the clock (microseconds), so they keep rising across server
        # restarts and a client resuming with the last id it saw never takes new events for old.
        self._ids = itertools.count(first_id if first_id is not None else time.time_ns() // 1000)
        self._replay: deque[Event] = deque(maxlen=replay_size)
        self._listeners: set[Listener] = set()

    @property
    def last_id(self) -> int:
        return self._replay[-1].id if self._replay else 0

    def publish(self, kind: str, data: dict[str, Any], *, vm_id: str | None, owner_id: str | None) -> Event:
        event = Event(next(self._ids), kind, vm_id, owner_id, data)
        self._replay.append(event)
        for listener in list(self._listeners):
            listener(event)
        return event

    def since(self, last_id: int) -> Iterable[Event]:
        return [e for e in self._replay if e.id > last_id]

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
