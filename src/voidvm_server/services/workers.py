"""WorkerPresence: this API worker as the other workers see it, and the WebSocket seats it holds.

Every worker has a row with a heartbeat (`api_workers`). Each authenticated WebSocket holds a
seat (`websocket_seats`), so a user's cap counts their sockets on every worker together. A seat
counts while its worker's heartbeat is fresh (`dead_after` seconds); a worker killed with its
sockets open stops beating and its seats stop counting. On this host a refusal first looks for
workers whose process is gone (their pid), so a crashed worker's seats are freed at once rather
than when its heartbeat goes stale. Rows of workers dead for `forget_after` are deleted; a worker
that was only stalled meanwhile (stopped, swapped out) finds its row again and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from sqlalchemy import select

from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.tables import ApiWorkerRow
from voidvm_server.persistence.workers import WorkerRepository
from voidvm_server.services.clock import now
from voidvm_server.services.ids import new_id
from voidvm_server.services.tasks import every

log = logging.getLogger(__name__)


class _Refused(Exception):
    """Rolls back a seat claim that would go past the cap."""


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerPresence:
    def __init__(
        self,
        db: Database,
        *,
        heartbeat_seconds: float = 5.0,
        dead_after: float = 15.0,
        forget_after: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.id = new_id("wrk")
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.heartbeat_seconds = heartbeat_seconds
        self.dead_after = dead_after
        self.forget_after = forget_after
        self._clock = clock
        self._beater: asyncio.Task[None] | None = None

    def _alive_after(self) -> float:
        return self._clock() - self.dead_after

    async def start(self) -> None:
        async with self.db.session() as s:
            await WorkerRepository(s).add(self.id, self.host, self.pid, now(), self._clock())
        self._beater = asyncio.create_task(every(self.heartbeat_seconds, self.beat, "The worker heartbeat"))

    async def beat(self) -> None:
        async with self.db.session() as s:
            workers = WorkerRepository(s)
            if not await workers.beat(self.id, self._clock()):
                await workers.add(self.id, self.host, self.pid, now(), self._clock())
            await workers.remove_dead(self._clock() - self.forget_after)

    async def claim_seat(self, user_id: str, limit: int) -> int | None:
        """A seat for one more socket of `user_id`, or None when they hold `limit` already."""
        seat = await self._claim(user_id, limit)
        if seat is None and await self._forget_vanished_workers():
            seat = await self._claim(user_id, limit)
        return seat

    async def _claim(self, user_id: str, limit: int) -> int | None:
        try:
            async with self.db.session() as s:
                seat = await WorkerRepository(s).take_seat(
                    self.id, user_id, now(), self._alive_after(), limit
                )
                if seat is None:
                    raise _Refused
                return seat
        except _Refused:
            return None

    async def free_seat(self, seat_id: int) -> None:
        async with self.db.session() as s:
            await WorkerRepository(s).free_seat(seat_id)

    async def live_workers(self) -> set[str]:
        """The ids of the workers alive now: on this host, those whose process is (a worker
        stalled behind the database's write lock is late with its heartbeat, not dead);
        elsewhere, those with a fresh heartbeat."""
        async with self.db.reading() as s:
            rows = (await s.execute(
                select(ApiWorkerRow.id, ApiWorkerRow.host, ApiWorkerRow.pid, ApiWorkerRow.heartbeat_at)
            )).all()  # fmt: skip
        alive_after = self._alive_after()
        return {
            worker_id
            for worker_id, host, pid, beat in rows
            if worker_id == self.id or (_process_exists(pid) if host == self.host else beat >= alive_after)
        }

    async def seats_of(self, user_id: str) -> int:
        async with self.db.reading() as s:
            return await WorkerRepository(s).seats_of(user_id, self._alive_after())

    async def _forget_vanished_workers(self) -> bool:
        """Drop the rows (and seats) of this host's workers whose process is gone; any?"""
        async with self.db.reading() as s:
            rows = (await s.execute(
                select(ApiWorkerRow.id, ApiWorkerRow.pid).where(ApiWorkerRow.host == self.host)
            )).all()  # fmt: skip
        gone = [worker_id for worker_id, pid in rows if worker_id != self.id and not _process_exists(pid)]
        for worker_id in gone:
            log.info("API worker %s is gone: its WebSocket seats are freed", worker_id)
            async with self.db.session() as s:
                await WorkerRepository(s).remove(worker_id)
        return bool(gone)

    async def stop(self) -> None:
        beater, self._beater = self._beater, None
        if beater is not None:
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater
        try:
            async with self.db.session() as s:
                await WorkerRepository(s).remove(self.id)
        except Exception:  # the database away at shutdown: the heartbeat goes stale instead
            log.warning("Could not remove this worker's row at shutdown", exc_info=True)
