"""WorkerPresence: a user's WebSocket cap counted across API workers through the database."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator

import pytest

from tests.conftest import FakeClock
from voidvm_server.persistence.engine import Database
from voidvm_server.services.workers import WorkerPresence


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    # Two handles on one database, as two worker processes have.
    first, second = Database(database_url), Database(database_url)
    await first.migrate()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _started(db: Database, clock: FakeClock) -> WorkerPresence:
    presence = WorkerPresence(db, clock=clock, heartbeat_seconds=3600)
    await presence.start()
    return presence


async def test_parallel_claims_on_two_workers_never_pass_the_cap(
    databases: tuple[Database, Database],
) -> None:
    clock = FakeClock()
    one, two = await _started(databases[0], clock), await _started(databases[1], clock)
    try:
        claims = [worker.claim_seat("usr-a", 10) for worker in (one, two) for _ in range(12)]
        seats = await asyncio.gather(*claims)
        assert sum(seat is not None for seat in seats) == 10
        assert await one.seats_of("usr-a") == 10
        assert await two.claim_seat("usr-b", 10) is not None  # the cap is per user
        freed = next(seat for seat in seats if seat is not None)
        await one.free_seat(freed)
        assert await two.claim_seat("usr-a", 10) is not None
        assert await two.claim_seat("usr-a", 10) is None
    finally:
        await one.stop()
        await two.stop()


async def test_a_worker_whose_heartbeat_stopped_holds_no_seats(databases: tuple[Database, Database]) -> None:
    clock = FakeClock()
    stalled, live = await _started(databases[0], clock), await _started(databases[1], clock)
    try:
        for _ in range(10):
            assert await stalled.claim_seat("usr-a", 10) is not None
        assert await live.claim_seat("usr-a", 10) is None
        clock.now += 10
        await live.beat()
        assert await live.claim_seat("usr-a", 10) is None  # 10 s of silence: still alive
        clock.now += 10
        await live.beat()
        assert await live.claim_seat("usr-a", 10) is not None  # 20 s: its seats no longer count
        await stalled.beat()  # it was only stalled: it beats again, its seats count again
        assert await stalled.seats_of("usr-a") == 11
    finally:
        await stalled.stop()
        await live.stop()


async def test_the_seats_of_a_worker_process_that_is_gone_are_freed_at_once(
    databases: tuple[Database, Database],
) -> None:
    clock = FakeClock()
    gone = WorkerPresence(databases[0], clock=clock, heartbeat_seconds=3600)
    exited = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    gone.pid = int(exited.stdout)  # a process of this host that has ended
    await gone.start()
    live = await _started(databases[1], clock)
    try:
        for _ in range(10):
            assert await gone.claim_seat("usr-a", 10) is not None
        assert await live.claim_seat("usr-a", 10) is not None  # no waiting for its heartbeat to go stale
        assert await live.seats_of("usr-a") == 1
    finally:
        await live.stop()


async def test_a_stopped_worker_frees_its_seats(databases: tuple[Database, Database]) -> None:
    clock = FakeClock()
    one, two = await _started(databases[0], clock), await _started(databases[1], clock)
    try:
        for _ in range(10):
            assert await one.claim_seat("usr-a", 10) is not None
        await one.stop()
        assert await two.seats_of("usr-a") == 0
    finally:
        await two.stop()
