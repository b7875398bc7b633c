"""EventLog: events written to the database, then handed to this process's listeners.

A change and the event that tells of it are one transaction: a writer opens its unit of work
with `session()` and calls `add` in it; the events are delivered once it has committed, so no
subscriber ever hears of a change that was rolled back, and the id is the database's. `publish`
is both for an event that stands alone. Such units of work take turns in this process (taken
before any lock of the database's, so they cannot deadlock on one), so events are delivered in
id order: a socket sends ids in increasing order and the SDKs drop any id at or below the last.
A client that resumes with the last id it saw reads what it missed from the table, across
restarts. The newest `keep` events are kept (pruned at start-up and hourly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.events.bus import Event, EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.events import EventRepository
from voidvm_server.services.clock import now
from voidvm_server.services.tasks import every

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600.0
_TOLD = "voidvm.events"  # the session's events, delivered after its commit
REPLAY_LIMIT = 1000  # events one resume sends at most: the newest it missed, the rest a gap


class EventLog:
    def __init__(self, db: Database, bus: EventBus, *, keep: int = 100_000) -> None:
        self.db = db
        self.bus = bus
        self.keep = keep
        self.delivered_id = 0  # the newest id delivered here (or the table's newest at start-up)
        self._turn = asyncio.Lock()
        self._pruner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.delivered_id = await self.last_id()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work of the database whose events (`add`) are delivered once it commits."""
        async with self._turn:
            told: list[Event] = []
            async with self.db.session() as s:
                s.info[_TOLD] = told
                yield s
            for event in told:
                self.delivered_id = max(self.delivered_id, event.id)
                self.bus.deliver(event)

    async def add(self, s: AsyncSession, kind: str, data: dict[str, Any], *, vm_id: str | None,
                  owner_id: str | None) -> Event:  # fmt: skip
        """Write an event in a unit of work of `session()`; delivered after its commit."""
        told = s.info.get(_TOLD)
        if told is None:
            raise RuntimeError("events are written in a unit of work of EventLog.session()")
        event = await EventRepository(s).add(kind, data, vm_id=vm_id, owner_id=owner_id, at=now())
        told.append(event)
        return event

    async def publish(self, kind: str, data: dict[str, Any], *, vm_id: str | None,
                      owner_id: str | None) -> Event:  # fmt: skip
        async with self.session() as s:
            return await self.add(s, kind, data, vm_id=vm_id, owner_id=owner_id)

    async def since(self, last_id: int, limit: int = REPLAY_LIMIT) -> list[Event]:
        """The newest `limit` events after `last_id`, oldest first."""
        async with self.db.reading() as s:
            return await EventRepository(s).since(last_id, limit)

    async def last_id(self) -> int:
        """The newest event's id (0 when there is none)."""
        async with self.db.reading() as s:
            return await EventRepository(s).newest_id()

    async def first_id(self) -> int:
        """The oldest kept event's id (0 when there is none)."""
        async with self.db.reading() as s:
            return await EventRepository(s).oldest_id()

    # -- retention ---------------------------------------------------------------------------
    def start_pruning(self) -> None:
        if self._pruner is None:
            pruning = every(PRUNE_EVERY_SECONDS, self.prune, "Pruning old events")
            self._pruner = asyncio.create_task(pruning, name="event-pruner")

    async def prune(self) -> int:
        async with self.db.session() as s:
            gone = await EventRepository(s).prune(self.keep)
        if gone:
            log.info("Deleted %d old events (the newest %d are kept)", gone, self.keep)
        return gone

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
