"""EventLog: events written to the database, then handed to this process's listeners.

A change and the event that tells of it are one transaction: a writer calls `add` inside its
own unit of work and `deliver` once that has committed, so no subscriber ever hears of a change
that was rolled back, and the id is the database's. `publish` is both for an event that stands
alone. A client that resumes with the last id it saw reads what it missed from the table, across
restarts. The newest `keep` events are kept (pruned at start-up and hourly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.events.bus import Event, EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.events import EventRepository
from voidvm_server.services.clock import now

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600.0
REPLAY_LIMIT = 1000  # events one resume sends at most: the newest it missed, the rest a gap


class EventLog:
    def __init__(self, db: Database, bus: EventBus, *, keep: int = 100_000) -> None:
        self.db = db
        self.bus = bus
        self.keep = keep
        self._pruner: asyncio.Task[None] | None = None

    async def add(self, s: AsyncSession, kind: str, data: dict[str, Any], *, vm_id: str | None,
                  owner_id: str | None) -> Event:  # fmt: skip
        """Write an event in the caller's unit of work; `deliver` it after the commit."""
        return await EventRepository(s).add(kind, data, vm_id=vm_id, owner_id=owner_id, at=now())

    def deliver(self, events: Iterable[Event]) -> None:
        for event in events:
            self.bus.deliver(event)

    async def publish(self, kind: str, data: dict[str, Any], *, vm_id: str | None,
                      owner_id: str | None) -> Event:  # fmt: skip
        async with self.db.session() as s:
            event = await self.add(s, kind, data, vm_id=vm_id, owner_id=owner_id)
        self.bus.deliver(event)
        return event

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
            self._pruner = asyncio.create_task(self._prune_now_and_then(), name="event-pruner")

    async def _prune_now_and_then(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:  # the database is away: the next round tries again
                log.warning("Pruning old events failed", exc_info=True)
            await asyncio.sleep(PRUNE_EVERY_SECONDS)

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
