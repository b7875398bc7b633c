"""SqliteLimitStorage: rate limits and counters in one SQLite file, shared by every process on a host.

A `limits` storage (moving windows and counters) that answers as its `MemoryStorage` does, but
keeps its data in a file, so the API workers on one host spend one budget together. Every change
to a key is one `BEGIN IMMEDIATE` transaction: SQLite lets one writer at a time through, whichever
process it is in, so two workers can never both take the last slot of a window.

The data is disposable: losing it only hands out fresh budgets. So the file is in WAL mode, where
readers do not wait for the writer, with `synchronous=OFF`: an OS crash may lose recent hits, a
crashed process loses nothing. Expired rows are deleted as they are met (a key's old hits at each
of its hits) and, about once a minute, everywhere, so the file does not grow.

A call is first tried in the event loop on a connection that never waits (busy timeout 0): a hit
takes SQLite some 20-40 µs, less than the trip to a thread and back. When another process's writer
holds the file, that try changes nothing (`BEGIN IMMEDIATE` comes first) and the call goes to a
thread of this storage's own, with a connection of its own, which waits up to 5 s for the writer
(`_patiently`), so the event loop never waits on the file. Both start at the first call, in the
process that makes it (a process forked later opens its own), and stop at `close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from limits.aio.storage import MovingWindowSupport, Storage

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

BUSY_SECONDS = 5.0  # how long a call waits for another process's writer before it fails
SWEEP_SECONDS = 60.0

# One B-tree a table, clustered by key (each B-tree more costs a hit about 20 µs of page writes).
# A hit is a row, or several made at the same instant (`n`); `seq` counts a key's hits up to and
# including its row, so a window's size is two index look-ups, however many hits it holds.
# `expires` lets the sweep find old rows; it scans the tables whole: a few ms for 50,000 hits.
SCHEMA_VERSION = 1
SCHEMA = (
    "CREATE TABLE hits (key TEXT NOT NULL, at REAL NOT NULL, n INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " expires REAL NOT NULL, PRIMARY KEY (key, at)) WITHOUT ROWID",
    "CREATE TABLE counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL)"
    " WITHOUT ROWID",
)

# A key's oldest hit after `:cutoff` and its newest hit; no row when the window is empty. One
# statement: one state of the file.
WINDOW = """
SELECT oldest.at, oldest.seq - oldest.n, newest.at, newest.seq FROM
    (SELECT at, seq, n FROM hits WHERE key = :key AND at > :cutoff ORDER BY at LIMIT 1) AS oldest,
    (SELECT at, seq FROM hits WHERE key = :key ORDER BY at DESC LIMIT 1) AS newest
"""

# A counter's window starts when it goes up from nothing: absent, expired, or given back to 0
# (as in MemoryStorage and RedisStorage). The SET expressions read the row as it was.
INCR = """
INSERT INTO counters (key, value, expires) VALUES (:key, :amount, :now + :expiry)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN expires > :now THEN value + :amount ELSE :amount END,
    expires = CASE WHEN expires > :now AND value != 0 THEN expires ELSE :now + :expiry END
RETURNING value, expires
"""


class SqliteLimitStorage(Storage, MovingWindowSupport):
    """`limits` storage for `MovingWindowRateLimiter` and for counters (`incr`, `get`,
    `get_expiry`), kept in the SQLite file at `path`. `clock` tells the time (tests move it)."""

    STORAGE_SCHEME = None  # made directly, never from a storage URI

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.path = path
        self.clock = clock
        self._jobs: queue.SimpleQueue[tuple[asyncio.Future[Any], Job] | None] | None = None
        self._pid = 0
        self._in_loop: sqlite3.Connection | None = None  # the event loop's own, never waiting
        self._in_loop_pid = 0
        self._next_sweep = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    # --- the thread and its connection ---

    async def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """`job(connection)`: at once in the loop if the file is free, else on the storage's thread."""
        try:
            if self._in_loop is None or self._in_loop_pid != os.getpid():
                self._in_loop, self._in_loop_pid = self._connect(), os.getpid()
            return job(self._in_loop)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        return await self._on_thread(job)

    async def _on_thread(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """`job(connection)`, run on the storage's thread, patiently."""
        if self._jobs is None or self._pid != os.getpid():
            self._jobs, self._pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(
                target=self._serve, args=(self._jobs,), name="voidvm-limits", daemon=True
            ).start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((future, job))
        return await future

    def _serve(self, jobs: queue.SimpleQueue[tuple[asyncio.Future[Any], Job] | None]) -> None:
        """The thread: runs the jobs in turn until told to stop (a None)."""
        conn: sqlite3.Connection | None = None
        try:
            while (item := jobs.get()) is not None:
                future, job = item
                result: Any = None
                error: Exception | None = None
                try:
                    conn = conn or _patiently(self._connect)
                    result = _patiently(job, conn)
                except Exception as exc:
                    error = exc
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits for it
                    future.get_loop().call_soon_threadsafe(_settle, future, result, error)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Budgets name users and addresses: for the server's user only. SQLite gives its -wal and
        # -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)  # see _patiently
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")
            with _transaction(conn):  # the data is disposable: another version's is dropped
                if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    conn.execute("DROP TABLE IF EXISTS hits")
                    conn.execute("DROP TABLE IF EXISTS counters")
                    for statement in SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        """`fn(connection, now)`: its one SELECT sees one state of the file."""
        return await self._run(lambda conn: fn(conn, self.clock()))

    async def _write(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        """`fn(connection, now)` in one write transaction, with the occasional sweep of everything."""

        def job(conn: sqlite3.Connection) -> T:
            with _transaction(conn):
                now = self.clock()
                result = fn(conn, now)
                if not now < self._next_sweep <= now + SWEEP_SECONDS:  # or the clock went back
                    conn.execute("DELETE FROM hits WHERE expires <= ?", (now,))
                    conn.execute("DELETE FROM counters WHERE expires <= ?", (now,))
                    self._next_sweep = now + SWEEP_SECONDS
            return result

        return await self._run(job)

    async def close(self) -> None:
        """Wait for the calls already made, close the connection and stop the thread (a later
        call starts them again)."""
        if self._in_loop is not None and self._in_loop_pid == os.getpid():
            self._in_loop.close()
        self._in_loop = None
        jobs, self._jobs = self._jobs, None
        if jobs is None or self._pid != os.getpid():
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        jobs.put((done, lambda conn: None))
        jobs.put(None)
        await done

    # --- counters ---

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add `amount` (may be negative) to `key`'s counter and return its new value; a counter
        going up from nothing starts a window of `expiry` seconds, at whose end it is gone."""
        value, _ = await self.incr_with_expiry(key, expiry, amount)
        return value

    async def incr_with_expiry(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        """`incr`, and when the counter's window ends, in one call."""

        def incr(conn: sqlite3.Connection, now: float) -> tuple[int, float]:
            row = conn.execute(INCR, {"key": key, "amount": amount, "now": now, "expiry": expiry})
            value, expires = row.fetchone()
            return int(value), float(expires)

        return await self._write(incr)

    async def get(self, key: str) -> int:
        """`key`'s counter (0 when it has none or its window ended)."""

        def get(conn: sqlite3.Connection, now: float) -> int:
            sql = "SELECT value FROM counters WHERE key = ? AND expires > ?"
            row = conn.execute(sql, (key, now)).fetchone()
            return int(row[0]) if row else 0

        return await self._read(get)

    async def get_expiry(self, key: str) -> float:
        """When `key`'s counter window ends (now, when it has none)."""

        def get_expiry(conn: sqlite3.Connection, now: float) -> float:
            sql = "SELECT expires FROM counters WHERE key = ? AND expires > ?"
            row = conn.execute(sql, (key, now)).fetchone()
            return float(row[0]) if row else now

        return await self._read(get_expiry)

    # --- moving windows ---

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Record `amount` hits on `key` if they fit: at most `limit - amount` hits in the last
        `expiry` seconds. Refused hits are not recorded."""
        acquired, _, _ = await self.acquire_with_window(key, limit, expiry, amount)
        return acquired

    async def acquire_with_window(
        self, key: str, limit: int, expiry: float, amount: int = 1
    ) -> tuple[bool, float, int]:
        """`acquire_entry` and `get_moving_window` in one call and one transaction: (whether the
        hits were recorded, when the window's oldest hit was made (now, when it has none), how
        many hits it holds)."""

        def acquire(conn: sqlite3.Connection, now: float) -> tuple[bool, float, int]:
            cutoff = now - expiry
            conn.execute("DELETE FROM hits WHERE key = ? AND at <= ?", (key, cutoff))
            row = conn.execute(WINDOW, {"key": key, "cutoff": cutoff}).fetchone()
            oldest, before, newest, seq = row if row else (now, 0, now, 0)
            held = seq - before
            if held + amount > limit:
                return False, float(oldest), held
            at = max(now, newest)  # after the newest, should the clock have gone back
            conn.execute(
                "INSERT INTO hits (key, at, n, seq, expires) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key, at) DO UPDATE SET n = n + excluded.n, seq = excluded.seq",
                (key, at, amount, seq + amount, at + expiry),
            )
            return True, float(oldest), held + amount

        return await self._write(acquire)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(when the oldest hit of the last `expiry` seconds was made, or now; how many there are)."""

        def window(conn: sqlite3.Connection, now: float) -> tuple[float, int]:
            row = conn.execute(WINDOW, {"key": key, "cutoff": now - expiry}).fetchone()
            return (float(row[0]), int(row[3] - row[1])) if row else (now, 0)

        return await self._read(window)

    # --- the whole storage ---

    async def clear(self, key: str) -> None:
        """Forget `key`'s hits and its counter."""

        def clear(conn: sqlite3.Connection, now: float) -> None:
            conn.execute("DELETE FROM hits WHERE key = ?", (key,))
            conn.execute("DELETE FROM counters WHERE key = ?", (key,))

        await self._write(clear)

    async def reset(self) -> int | None:
        """Forget everything; returns how many keys there were."""

        def reset(conn: sqlite3.Connection, now: float) -> int:
            sql = "SELECT (SELECT COUNT(DISTINCT key) FROM hits) + (SELECT COUNT(*) FROM counters)"
            (keys,) = conn.execute(sql).fetchone()
            conn.execute("DELETE FROM hits")
            conn.execute("DELETE FROM counters")
            return int(keys)

        return await self._write(reset)

    async def check(self) -> bool:
        def check(conn: sqlite3.Connection, now: float) -> bool:
            return bool(conn.execute("SELECT 1").fetchone() == (1,))

        try:
            return await self._read(check)
        except sqlite3.Error:
            return False


def _patiently(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)`, again while another process's writer holds the file, for up to BUSY_SECONDS.
    Our own busy timeout: SQLite's sleeps 1, 2, 5, 10, 15... ms between tries, so a waiting worker
    loses to a busy one for tens of ms (measured: 34 ms worst, 2 workers flat out; 5 ms with this)."""
    deadline = time.monotonic() + BUSY_SECONDS
    delay = 0.0001
    while True:
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)  # a failed try has changed nothing: BEGIN IMMEDIATE comes first
        delay = min(2 * delay, 0.0005)


def _settle(future: asyncio.Future[Any], result: Any, error: Exception | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")  # the write lock at once, not at the first write: no deadlock
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite ends some failed ones itself
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
