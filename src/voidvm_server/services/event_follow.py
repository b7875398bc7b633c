"""Wake-ups for an EventLog's follower: another process may have written events.

They only say "look now", with the newest id they know of (None: look in any case); the follower
(services/event_log.py) reads the table and delivers what is new, unless that id is delivered
already (an event of this process's own, say). Neither ever fails for good: a lost connection is
opened again after a short pause.

- PostgreSQL: one LISTEN connection per process (asyncpg, from the database URL) on the channel
  every writer of events notifies at its commit (persistence/events.py); it also reads the newest
  id once a second, in case a notification was lost (and to know the connection still works).
- SQLite: a connection of its own, in the event loop, asks every `interval` whether another
  connection committed (`PRAGMA data_version`, a read of shared memory) and, only then, the
  table's newest id. In WAL mode neither waits for a writer. Besides, every process of the host
  has a doorbell (`Doorbells`), a datagram socket that a writer rings after each commit with
  events: SQLite's stand-in for NOTIFY, so that a follower hears at once instead of at its next
  look; the look stays, for a ring lost or never sent (a writer killed after its commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import make_url

from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.events import EVENT_CHANNEL

log = logging.getLogger(__name__)
RETRY_SECONDS = 0.1  # the first pause before connecting again, doubled up to MAX_RETRY_SECONDS
MAX_RETRY_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 5.0  # the LISTEN connection's check of the newest id: else it is lost
APPLICATION_NAME = "voidvm-events"  # the LISTEN connection's name in pg_stat_activity


def sqlite_file(db: Database) -> str | None:
    """The SQLite database's file (None for PostgreSQL or a database in memory)."""
    if not db.is_sqlite:
        return None
    path = make_url(db.url).database
    return None if path in (None, "", ":memory:") or path.startswith("file:") else path


def postgres_connect_args(db: Database) -> dict[str, Any]:
    """asyncpg.connect's arguments for `db`, as SQLAlchemy's own pool builds them from the URL."""
    _, kwargs = db.engine.dialect.create_connect_args(db.engine.url)
    for key in ("async_creator_fn", "prepared_statement_cache_size", "prepared_statement_name_func"):
        kwargs.pop(key, None)  # SQLAlchemy's, not asyncpg's
    return dict(kwargs)


Wake = Callable[[int | None], None]


class Doorbells:
    """One datagram socket per process in `directory`, rung with the newest event id after each
    commit with events by any process of the host. Ringing never waits: a full or gone doorbell
    is skipped (its owner's `watch_sqlite` catches up all the same), one nobody answers any more
    is removed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._own: socket.socket | None = None
        self._own_path: Path | None = None
        self._sender: socket.socket | None = None

    def open(self, wake: Wake) -> None:
        """Hang this process's doorbell; without one (a path too long for a unix socket, say) it
        hears of other processes' events at its next look only."""
        path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        own = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            own.setblocking(False)
            own.bind(str(path))
        except OSError as exc:
            own.close()
            log.info("No doorbell for events in %s (%s): other processes' events are seen within "
                     "the watch's interval", self.directory, exc)  # fmt: skip
            return
        self._own, self._own_path = own, path
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        asyncio.get_running_loop().add_reader(own.fileno(), self._answer, wake)

    def _answer(self, wake: Wake) -> None:
        """Every ring waiting, then one look for them all."""
        assert self._own is not None
        newest, unknown = 0, False
        while True:
            try:
                payload = self._own.recv(32)
            except OSError:  # BlockingIOError: no more rings
                break
            if payload.isdigit():
                newest = max(newest, int(payload))
            else:
                unknown = True
        wake(None if unknown else newest)

    def ring(self, newest: int) -> None:
        if self._sender is None:
            return
        try:
            doorbells = list(self.directory.iterdir())
        except OSError:
            return
        payload = str(newest).encode()
        for path in doorbells:
            if path == self._own_path or path.suffix != ".sock":
                continue
            try:
                self._sender.sendto(payload, str(path))
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:  # its process is gone
                    with contextlib.suppress(OSError):  # best effort, after a commit
                        path.unlink()

    def close(self) -> None:
        if self._own is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                asyncio.get_running_loop().remove_reader(self._own.fileno())
            self._own.close()
        if self._own_path is not None:
            self._own_path.unlink(missing_ok=True)
        if self._sender is not None:
            self._sender.close()
        self._own = self._own_path = self._sender = None


async def watch_sqlite(path: str, wake: Wake, *, interval: float) -> None:
    """`wake` with the table's newest id whenever another connection has committed."""
    conn: sqlite3.Connection | None = None
    version: int | None = None
    try:
        while True:
            try:
                if conn is None:
                    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
                    conn.execute("PRAGMA query_only=ON")
                    version = None
                # fetchall: a statement not run to its end would hold its read transaction open
                ((current,),) = conn.execute("PRAGMA data_version").fetchall()
                if current != version:
                    version = current
                    ((top,),) = conn.execute("SELECT max(id) FROM events").fetchall()
                    wake(int(top or 0))
            except sqlite3.Error:
                # Busy for a moment, or the file away: open it again shortly, and have the
                # follower read meanwhile (it logs what fails and retries).
                log.debug("Watching %s for new events failed", path, exc_info=True)
                if conn is not None:
                    conn.close()
                    conn = None
                wake(None)
                await asyncio.sleep(max(interval, RETRY_SECONDS))
                continue
            await asyncio.sleep(interval)
    finally:
        if conn is not None:
            conn.close()


async def listen_postgres(connect_args: dict[str, Any], wake: Wake, *, check_every: float) -> None:
    """Hold a LISTEN connection on the events channel: `wake` at every notification (with its
    id), once each time it is (re)connected, and with the newest id every `check_every` seconds
    (a safety poll, should a notification be lost; and the connection's health check). While it
    cannot connect, `wake` at every try, so that the follower reads all the same."""
    delay = RETRY_SECONDS
    failures = 0
    args = {"timeout": 5, "server_settings": {"application_name": APPLICATION_NAME}, **connect_args}
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(**args)
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            await conn.add_listener(EVENT_CHANNEL, lambda *args: wake(_id(args[-1])))
            if failures:
                log.info("Listening for events of other processes again")
            failures, delay = 0, RETRY_SECONDS
            wake(None)  # what was committed while it was away
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(check_every):
                        await lost.wait()
                if lost.is_set():
                    raise ConnectionError("the LISTEN connection was closed by the server")
                async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                    top = await conn.fetchval("SELECT max(id) FROM events")
                wake(int(top or 0))
        except Exception:  # PostgreSQL restarting, unreachable, the connection cut: again soon
            failures += 1
            if failures == 1:
                log.warning("Listening for events of other processes failed; retrying", exc_info=True)
            else:
                log.debug("Listening for events failed again (%d)", failures, exc_info=True)
        finally:
            if conn is not None:
                await _close(conn)
        wake(None)
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)


def _id(payload: object) -> int | None:
    return int(payload) if isinstance(payload, str) and payload.isdigit() else None


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=1)  # a no-op when it is closed already
    except Exception:
        log.debug("Closing the LISTEN connection failed", exc_info=True)
    finally:
        if not conn.is_closed():  # the close failed, or was cancelled
            conn.terminate()
