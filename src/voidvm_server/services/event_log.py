"""EventLog: events written to the database, then handed to this process's listeners.

A change and the event that tells of it are one transaction: a writer opens its unit of work
with `session()` and calls `add` in it; the event is delivered once it has committed, so no
subscriber ever hears of a change that was rolled back, and the id is the database's. `publish`
is both for an event that stands alone.

Every process delivers every event, whoever wrote it, by reading the table: in id order, each
event once, everything after `delivered_id`, in pages (a catch-up). Catch-ups take turns (a
lock), so none delivers an event twice or out of order. Ids are commit-ordered (SQLite has one
writer; on PostgreSQL an advisory lock of the writers', persistence/events.py), so once a reader
sees id 11, no id 10 can appear after it. A local unit of work, once committed, catches up before
`session()` returns: its own events are delivered by then, with any lower ones of other
processes before them (when there are none, straight from memory, without a read). From
`start()` on, a follower task also catches up whenever woken (services/event_follow.py): on
PostgreSQL by the NOTIFY every commit with events sends, heard on a LISTEN connection that also
checks the newest id once a second (a notification is lost while that connection is down); on
SQLite by a doorbell every writer rings after its commit, and a poll of `PRAGMA data_version`
every 20 ms for a ring that never came. A catch-up that fails (the database away)
is logged and tried again; pruning only leaves fewer rows to read, so the follower never skips a
kept event nor stalls. (An EventLog never started delivers its own writes only, from its first
one on.)

Local units of work also take turns in this process (taken before any lock of the database's,
so they cannot deadlock on one) and catch up before the next begins, as before the follower:
delivery order rests on the catch-up, the turn keeps this process's writers from queueing on the
database's write lock and the event lock one behind another. A client that resumes with the last
id it saw reads what it missed from the table, across restarts. The newest `keep` events are
kept (pruned at start-up and hourly).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.events.bus import Event, EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.events import EventRepository
from voidvm_server.services.clock import now
from voidvm_server.services.event_follow import (
    Doorbells,
    listen_postgres,
    postgres_connect_args,
    sqlite_file,
    watch_sqlite,
)
from voidvm_server.services.tasks import every

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600.0
_TOLD = "voidvm.events"  # the session's events, delivered after its commit
REPLAY_LIMIT = 1000  # events one resume sends at most: the newest it missed, the rest a gap
PAGE = 500  # events one read of a catch-up takes
SQLITE_POLL_SECONDS = 0.02  # how often SQLite is asked whether another connection committed
SAFETY_POLL_SECONDS = 1.0  # how often PostgreSQL's LISTEN connection checks the newest id
BACKSTOP_SECONDS = 30.0  # a catch-up at least this often, whatever woke the follower or not
MAX_RETRY_SECONDS = 1.0  # the longest pause of the follower after a failed catch-up


class EventLog:
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        *,
        keep: int = 100_000,
        poll: float = SQLITE_POLL_SECONDS,
        safety_poll: float = SAFETY_POLL_SECONDS,
        doorbells: bool = True,
    ) -> None:
        self.db = db
        self.bus = bus
        self.keep = keep
        self.poll = poll
        self.safety_poll = safety_poll
        self.page = PAGE
        self.delivered_id = 0  # the newest id delivered here (or the table's newest at start-up)
        self._origin = False  # delivered_id says where delivery starts (start(), or a first write)
        self._turn = asyncio.Lock()  # local units of work, one at a time
        self._catching = asyncio.Lock()  # catch-ups, one at a time
        self._wake = asyncio.Event()  # the follower: catch up now ...
        self._newest = 0  # ... if this id is not delivered yet
        self._unknown = False  # ... in any case
        self._unit: list[Event] | None = None  # the events of the local unit of work under way
        self._followers: list[asyncio.Task[None]] = []
        self._pruner: asyncio.Task[None] | None = None
        path = sqlite_file(db) if doorbells else None  # (tests turn them off to see the poll alone)
        self._doorbells = Doorbells(Path(path).parent / "doorbells") if path is not None else None

    async def start(self) -> None:
        """Deliver from the table's newest event on, this process's and every other's."""
        self.delivered_id = await self.last_id()
        self._origin = True
        if self._followers:
            return
        self._spawn(self._follow(), "event-follower")
        path = sqlite_file(self.db)
        if path is not None:
            self._spawn(watch_sqlite(path, self._look, interval=self.poll), "event-watch")
            if self._doorbells is not None:
                self._doorbells.open(self._look)
        elif not self.db.is_sqlite:
            args = postgres_connect_args(self.db)
            self._spawn(listen_postgres(args, self._look, check_every=self.safety_poll), "event-listen")

    def _look(self, newest: int | None = None) -> None:
        """Have the follower catch up: the table holds events up to `newest` (None: unknown)."""
        if newest is None:
            self._unknown = True
        elif newest > self.delivered_id:
            self._newest = max(self._newest, newest)
        else:
            return  # delivered already (this process's own, mostly)
        self._wake.set()

    def _spawn(self, work: Any, name: str) -> None:
        self._followers.append(asyncio.get_running_loop().create_task(work, name=name))

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work of the database whose events (`add`) are delivered once it commits."""
        async with self._turn:
            told: list[Event] = []
            self._unit = told
            try:
                async with self.db.session() as s:
                    s.info[_TOLD] = told
                    yield s
                if told:
                    if self._doorbells is not None:
                        self._doorbells.ring(told[-1].id)  # the other processes read meanwhile
                    await self._deliver_own(told)
            finally:
                self._unit = None
                if self._newest > self.delivered_id:
                    self._wake.set()  # what the follower left to this unit of work, undelivered

    async def _deliver_own(self, told: list[Event]) -> None:
        """Catch up through the events a local unit of work has just committed."""
        if not self._origin:  # never started: deliver from this unit of work's events on
            self.delivered_id = max(self.delivered_id, told[0].id - 1)
            self._origin = True
        try:
            await self._catch_up(through=told[-1].id, own=told)
        except asyncio.CancelledError:
            self._look(told[-1].id)  # the follower delivers them
            raise
        except Exception:  # written all the same: the follower delivers them once it can read
            log.warning("Delivering events %d to %d failed; trying again shortly", told[0].id,
                        told[-1].id, exc_info=True)  # fmt: skip
            self._look(told[-1].id)

    async def _catch_up(self, *, through: int | None = None, own: list[Event] | None = None) -> None:
        """Deliver the events after `delivered_id` in id order: all there are, or (`through`)
        until that id is delivered. `own`, a local unit of work's events, are delivered without
        a read when they come next (no other process wrote meanwhile)."""
        async with self._catching:
            if own and own[0].id == self.delivered_id + 1 and own[-1].id - own[0].id == len(own) - 1:
                for event in own:  # ids without a gap: no other event is between them
                    self.delivered_id = event.id
                    self.bus.deliver(event)
                return
            while through is None or self.delivered_id < through:
                async with self.db.reading() as s:
                    page = await EventRepository(s).after(self.delivered_id, self.page)
                for event in page:  # no await in between: none is delivered twice
                    self.delivered_id = event.id
                    self.bus.deliver(event)
                if len(page) < self.page:
                    return
                await asyncio.sleep(0)  # a long burst: let the loop run between pages
            self._look(None)  # stopped at `through` with more to read: the follower reads on

    async def _follow(self) -> None:
        """Catch up whenever woken (and at the latest after BACKSTOP_SECONDS); a failure is
        retried."""
        failures = 0
        while True:
            try:
                async with asyncio.timeout(BACKSTOP_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                self._unknown = True
            self._wake.clear()
            unit = self._unit
            if not self._unknown and (
                self._newest <= self.delivered_id or (unit and self._newest <= unit[-1].id)
            ):
                continue  # delivered, or about to be, by a local unit of work (its own events)
            self._unknown = False
            try:
                await self._catch_up()
            except Exception:
                failures += 1
                if failures == 1:
                    log.warning("Reading new events failed; trying again", exc_info=True)
                else:
                    log.debug("Reading new events failed again (%d)", failures, exc_info=True)
                await asyncio.sleep(min(0.05 * 2 ** min(failures, 10), MAX_RETRY_SECONDS))
                self._look(None)
                continue
            if failures:
                log.info("Reading new events again after %d failed tries", failures)
                failures = 0

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
        """Stop the follower (and its LISTEN connection or SQLite watch) and the pruner."""
        tasks = [*self._followers, *([self._pruner] if self._pruner else [])]
        self._followers, self._pruner = [], None
        if self._doorbells is not None:
            self._doorbells.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # their CancelledError stays theirs; a cancel of ours is ours
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("Event task %s had failed", task.get_name(), exc_info=task.exception())
