"""SqliteLimitStorage: moving windows and counters in a SQLite file, shared by processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from limits.aio.storage import MemoryStorage

from tests.conftest import FakeClock, make_settings
from voidvm_server.errors import TooManyRequestsError
from voidvm_server.services.login_guard import LoginGuard
from voidvm_server.services.ratelimit import RateLimiter
from voidvm_server.services.shared_limits import SqliteLimitStorage


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def storage(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteLimitStorage]:
    storage = SqliteLimitStorage(tmp_path / "limits.sqlite", clock=clock)
    yield storage
    await storage.close()


def rows(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608


# --- moving windows ---


async def test_a_window_allows_its_limit_then_refuses(storage: SqliteLimitStorage, clock: FakeClock) -> None:
    start = clock.now
    for held in range(1, 4):
        assert await storage.acquire_with_window("k", 3, 60) == (True, start, held)
        clock.now += 1
    assert await storage.acquire_with_window("k", 3, 60) == (False, start, 3)
    assert not await storage.acquire_entry("k", 3, 60)
    assert await storage.get_moving_window("k", 3, 60) == (start, 3)  # refused hits are not recorded
    assert await storage.get_moving_window("other", 3, 60) == (clock.now, 0)


async def test_the_window_moves(storage: SqliteLimitStorage, clock: FakeClock) -> None:
    t0 = clock.now
    for offset in (0, 10, 20):
        clock.now = t0 + offset
        assert await storage.acquire_entry("k", 3, 60)
    clock.now = t0 + 59.9
    assert not await storage.acquire_entry("k", 3, 60)
    assert await storage.get_moving_window("k", 3, 60) == (t0, 3)
    clock.now = t0 + 60  # the first hit has left the window: one slot is free, the next at +70
    assert await storage.get_moving_window("k", 3, 60) == (t0 + 10, 2)
    assert await storage.acquire_entry("k", 3, 60)
    assert not await storage.acquire_entry("k", 3, 60)
    clock.now = t0 + 200
    assert await storage.get_moving_window("k", 3, 60) == (clock.now, 0)


async def test_several_hits_at_once(storage: SqliteLimitStorage, clock: FakeClock) -> None:
    assert not await storage.acquire_entry("k", 3, 60, amount=4)
    assert await storage.acquire_entry("k", 3, 60, amount=2)
    assert await storage.acquire_entry("k", 3, 60)  # the same instant as the two
    assert await storage.get_moving_window("k", 3, 60) == (clock.now, 3)
    assert not await storage.acquire_entry("k", 3, 60)


async def test_a_large_window_counts_exactly(storage: SqliteLimitStorage, clock: FakeClock) -> None:
    t0 = clock.now
    for i in range(500):
        clock.now = t0 + i / 10
        assert await storage.acquire_entry("k", 500, 60)
    assert not await storage.acquire_entry("k", 500, 60)
    clock.now = t0 + 85  # the hits made after t0 + 25 are left: 251 to 499
    assert await storage.get_moving_window("k", 500, 60) == (t0 + 25.1, 249)
    assert await storage.acquire_with_window("k", 500, 60, amount=251) == (True, t0 + 25.1, 500)
    assert await storage.acquire_with_window("k", 500, 60) == (False, t0 + 25.1, 500)


async def test_the_clock_going_back_loses_no_hit(storage: SqliteLimitStorage, clock: FakeClock) -> None:
    t0 = clock.now
    assert await storage.acquire_entry("k", 2, 60)
    clock.now = t0 - 10
    assert await storage.acquire_with_window("k", 2, 60) == (True, t0, 2)  # recorded at t0
    assert not await storage.acquire_entry("k", 2, 60)
    clock.now = t0 + 60
    assert await storage.acquire_with_window("k", 2, 60) == (True, t0 + 60, 1)


async def test_clear_forgets_one_key_and_reset_all(storage: SqliteLimitStorage) -> None:
    for key in ("a", "b"):
        assert await storage.acquire_entry(key, 1, 60)
        await storage.incr(key, 60)
    await storage.clear("a")
    assert (await storage.get_moving_window("a", 1, 60))[1] == 0
    assert await storage.get("a") == 0
    assert not await storage.acquire_entry("b", 1, 60)
    assert await storage.get("b") == 1
    assert await storage.reset() == 2  # b's hits and b's counter
    assert await storage.acquire_entry("b", 1, 60)
    assert await storage.get("b") == 0
    assert await storage.check()


# --- counters ---


async def test_counters_count_up_and_down_within_their_window(
    storage: SqliteLimitStorage, clock: FakeClock
) -> None:
    t0 = clock.now
    assert await storage.incr_with_expiry("c", 30) == (1, t0 + 30)
    clock.now += 10
    assert await storage.incr_with_expiry("c", 30, 5) == (6, t0 + 30)  # the window began at the first
    assert await storage.incr("c", 30, -2) == 4
    assert await storage.get("c") == 4
    assert await storage.get_expiry("c") == t0 + 30
    clock.now = t0 + 30
    assert await storage.get("c") == 0
    assert await storage.get_expiry("c") == clock.now
    assert await storage.incr_with_expiry("c", 30) == (1, clock.now + 30)  # a new window


async def test_a_counter_given_back_to_zero_starts_a_new_window(
    storage: SqliteLimitStorage, clock: FakeClock
) -> None:
    t0 = clock.now
    assert await storage.incr("c", 30) == 1
    clock.now += 10
    assert await storage.incr("c", 30, -1) == 0
    assert await storage.incr_with_expiry("c", 30) == (1, t0 + 40)  # as MemoryStorage does
    assert await storage.incr_with_expiry("neg", 30, -1) == (-1, t0 + 40)


async def test_parallel_increments_each_see_their_own_value(storage: SqliteLimitStorage) -> None:
    values = await asyncio.gather(*(storage.incr("c", 60) for _ in range(50)))
    assert sorted(values) == list(range(1, 51))


async def test_the_same_answers_as_memory_storage(storage: SqliteLimitStorage, clock: FakeClock) -> None:
    """Within one window, the two storages answer every call alike (the memory one's clock is real)."""
    memory = MemoryStorage()
    rng = random.Random(7)
    for _ in range(400):
        key = rng.choice(["a", "b", "c"])
        op = rng.randrange(5)
        if op == 0:
            amount = rng.randint(1, 3)
            assert await storage.acquire_entry(key, 5, 600, amount) == await memory.acquire_entry(
                key, 5, 600, amount
            )
        elif op == 1:
            amount = rng.randint(-2, 3)
            assert await storage.incr(key, 600, amount) == await memory.incr(key, 600, amount)
        elif op == 2:
            assert await storage.get(key) == await memory.get(key)
        elif op == 3:
            ours, theirs = (
                await storage.get_moving_window(key, 5, 600),
                await memory.get_moving_window(key, 5, 600),
            )
            assert ours[1] == theirs[1]
        elif rng.random() < 0.2:
            await storage.clear(key)
            await memory.clear(key)
        clock.now += 0.001


# --- the file ---


async def test_expired_rows_are_swept(storage: SqliteLimitStorage, clock: FakeClock) -> None:
    for key in ("idle", "busy"):
        assert await storage.acquire_entry(key, 10, 5)
        await storage.incr(key, 5)
    clock.now += 6
    assert await storage.acquire_entry("busy", 10, 5)  # its own old hit goes at once
    assert rows(storage.path, "hits") == 2  # idle's waits for the sweep, once a minute
    clock.now += 60
    assert await storage.acquire_entry("busy", 10, 5)
    assert rows(storage.path, "hits") == 1
    assert rows(storage.path, "counters") == 0


async def test_the_file_is_the_server_users_only_and_in_wal_mode(storage: SqliteLimitStorage) -> None:
    await storage.incr("c", 60)
    assert storage.path.stat().st_mode & 0o777 == 0o600
    with contextlib.closing(sqlite3.connect(storage.path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_file_of_another_schema_version_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "limits.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE hits (something_else TEXT)")
    storage = SqliteLimitStorage(path)
    assert await storage.acquire_entry("k", 1, 60)
    await storage.close()
    again = SqliteLimitStorage(path)  # the same version: kept
    assert not await again.acquire_entry("k", 1, 60)
    await again.close()


async def test_close_waits_and_a_later_call_reopens(storage: SqliteLimitStorage) -> None:
    pending = asyncio.ensure_future(storage.incr("c", 60))
    await asyncio.sleep(0)
    await storage.close()
    assert pending.done() and pending.result() == 1
    assert await storage.incr("c", 60) == 2


async def test_errors_reach_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "limits.sqlite"
    path.write_bytes(b"not a database, " * 256)
    storage = SqliteLimitStorage(path)
    with pytest.raises(sqlite3.DatabaseError):
        await storage.incr("c", 60)
    assert not await storage.check()
    path.unlink()  # the thread lives on: the next call opens the file again
    assert await storage.incr("c", 60) == 1
    await storage.close()


# --- RateLimiter and LoginGuard over the file ---


async def test_rate_limiter_verdicts_over_the_file(tmp_path: Path) -> None:
    limiter = RateLimiter(shared_path=tmp_path / "limits.sqlite")
    assert isinstance(limiter.storage, SqliteLimitStorage)
    item = limiter.parse("3/minute")
    assert (await limiter.check(item, "api", "u")).remaining == 3
    verdicts = [await limiter.hit(item, "api", "u") for _ in range(4)]
    assert [(v.allowed, v.remaining) for v in verdicts] == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert all(v.limit == 3 and 59 <= v.reset_after <= 60 for v in verdicts)
    assert not (await limiter.check(item, "api", "u")).allowed
    await limiter.clear(item, "api", "u")
    assert (await limiter.hit(item, "api", "u")).remaining == 2
    assert await limiter.count("x", 60) == (1, 60)
    assert await limiter.count("x", 60, -1) == (0, 60)
    assert await limiter.peek("x") == 0
    await limiter.reset()
    assert (await limiter.hit(item, "api", "u")).remaining == 2
    await limiter.close()


async def test_a_real_one_second_window_frees_up(tmp_path: Path) -> None:
    limiter = RateLimiter(shared_path=tmp_path / "limits.sqlite")
    item = limiter.parse("2/second")
    assert [(await limiter.hit(item, "k")).allowed for _ in range(3)] == [True, True, False]
    await asyncio.sleep(1.05)
    assert (await limiter.hit(item, "k")).allowed
    await limiter.close()


async def test_two_limiters_on_one_file_share_budgets(tmp_path: Path) -> None:
    """Two workers' limiters: one budget, one login lockout."""
    path = tmp_path / "limits.sqlite"
    first, second = RateLimiter(shared_path=path), RateLimiter(shared_path=path)
    item = first.parse("2/minute")
    assert (await first.hit(item, "api", "u")).allowed
    assert (await second.hit(item, "api", "u")).allowed
    assert not (await first.hit(item, "api", "u")).allowed
    settings = make_settings(tmp_path, login_max_failures=2)
    guards = [LoginGuard(first, settings), LoginGuard(second, settings)]
    await guards[0].claim("alice", "192.0.2.1")
    await guards[1].claim("alice", "192.0.2.1")
    with pytest.raises(TooManyRequestsError):
        await guards[0].claim("alice", "192.0.2.1")
    await guards[1].forgive("alice")
    await guards[0].claim("alice", "192.0.2.1")
    await first.close()
    await second.close()


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from pathlib import Path
    from voidvm_server.services.shared_limits import SqliteLimitStorage

    async def main() -> None:
        storage = SqliteLimitStorage(Path(sys.argv[1]))
        await storage.get("warm-up")  # the file is open and the thread started before the race
        print("ready", flush=True)
        start = float(sys.stdin.readline())
        await asyncio.sleep(start - time.time())  # both at once
        allowed = await asyncio.gather(*(storage.acquire_entry("k", 100, 60) for _ in range(150)))
        counted = await asyncio.gather(*(storage.incr("c", 60) for _ in range(150)))
        await storage.close()
        print(json.dumps({"allowed": sum(allowed), "counted": counted}), flush=True)

    asyncio.run(main())
    """
)


def test_two_processes_share_one_budget_exactly(tmp_path: Path) -> None:
    """Two processes, 150 hits each on a limit of 100: exactly 100 allowed between them."""
    path = tmp_path / "limits.sqlite"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        start = time.time() + 0.2
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{start}\n")
            worker.stdin.flush()
        results = [json.loads(worker.communicate(timeout=30)[0]) for worker in workers]
        assert [worker.returncode for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert sum(r["allowed"] for r in results) == 100
    assert sorted(results[0]["counted"] + results[1]["counted"]) == list(range(1, 301))


async def test_a_hit_while_another_process_writes_waits_off_the_event_loop(
    storage: SqliteLimitStorage,
) -> None:
    """Tried in the loop first; with the file's write lock held elsewhere, that try changes
    nothing and the hit waits on the storage's thread, the loop free meanwhile."""
    assert await storage.acquire_entry("k", 5, 60)  # the file exists, the loop's connection opened
    holder = sqlite3.connect(storage.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        hit = asyncio.create_task(storage.acquire_entry("k", 5, 60))
        ticks = 0
        for _ in range(20):  # the loop keeps running while the hit waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not hit.done() and ticks == 20
        holder.execute("COMMIT")
        assert await asyncio.wait_for(hit, 10)
    finally:
        holder.close()
    assert await storage.get_moving_window("k", 5, 60) == (pytest.approx(storage.clock(), abs=1), 2)
