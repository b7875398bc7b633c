"""The database handle: one async engine, sessions as units of work, migrations on start."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import Executable, Result, create_engine, event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from voidvm_server.errors import ServiceUnavailableError, StorageError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database cannot be reached right now (down, restarting, the
    connection lost, the pool exhausted), as opposed to a mistake in a query."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.DBAPIError) and isinstance(current.orig, sqlite3.Error):
            # SQLite says "OperationalError" for a missing table too: only these codes are the
            # database being unable to serve (busy, I/O error, full, read-only, cannot open).
            return getattr(current.orig, "sqlite_errorcode", -1) & 0xFF in _SQLITE_UNAVAILABLE
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
            return True
        if isinstance(current, ConnectionError) and current is not exc:
            return True  # a socket error beneath a database error
        name = type(current).__name__
        if type(current).__module__.startswith("asyncpg") and (
            "Connection" in name or "CannotConnectNow" in name
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _sqlite_code(exc: BaseException) -> int:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlite_errorcode", -1) & 0xFF if isinstance(orig, sqlite3.Error) else -1


def database_storage_problem(exc: BaseException) -> StorageError | None:
    """A StorageError when the database refused a write because its disk is full (SQLite's
    SQLITE_FULL, PostgreSQL's 53100) or read-only (SQLITE_READONLY); None otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = -1
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", -1) & 0xFF
        if code == sqlite3.SQLITE_FULL or getattr(current, "sqlstate", None) == "53100":
            return StorageError("The server has no space left for its database", code="STORAGE_FULL")
        if code == sqlite3.SQLITE_READONLY:
            return StorageError("The server's database is not writable", code="STORAGE_READ_ONLY")
        current = current.__cause__ or current.__context__
    return None


def unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("The database is unavailable; try again shortly")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # already so (the writer sets it): then a no-op
    cursor.execute("PRAGMA query_only=ON")  # a write through the reader fails, never waits
    cursor.execute("PRAGMA busy_timeout=1000")
    cursor.close()


class InLoopReader:
    """The read half of `AsyncSession` (execute, scalar, scalars, get) over a synchronous SQLite
    session that runs in the event loop.

    Through aiosqlite each statement costs four hand-offs to its worker thread and back, about
    0.5 ms of a request's CPU; the reads themselves take microseconds in SQLite, and in WAL mode a
    reader never waits for a writer, so running them in the loop is the cheaper choice. The
    connection is `query_only`, so a write sent through it fails at once instead of waiting for
    the write lock with the loop blocked."""

    def __init__(self, sessions: sessionmaker[Session], plain: Callable[[], sqlite3.Connection]) -> None:
        self._sessions = sessions
        self._session: Session | None = None  # made at the first statement that needs it
        self.plain_connection = plain  # for a `PlainRead` (persistence/plain_reads.py)

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self._sessions()
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    async def execute(self, statement: Executable, params: dict[str, Any] | None = None) -> Result[Any]:
        return self.session.execute(statement, params)

    async def scalar(self, statement: Executable, params: dict[str, Any] | None = None) -> Any:
        return self.session.scalar(statement, params)

    async def scalars(self, statement: Executable, params: dict[str, Any] | None = None) -> Any:
        return self.session.scalars(statement, params)

    async def get(self, entity: Any, ident: Any) -> Any:
        return self.session.get(entity, ident)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            # A local file never goes stale: no pre-ping round trip on every unit of work.
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._readers: sessionmaker[Session] | None = None
        self._read_engine: Engine | None = None
        self._plain: tuple[int, sqlite3.Connection] | None = None  # (its process, the connection)
        if self.is_sqlite and make_url(url).database not in (None, "", ":memory:"):
            self._read_engine = create_engine(make_url(url).set(drivername="sqlite+pysqlite"))
            event.listen(self._read_engine, "connect", _sqlite_read_only)
            self._readers = sessionmaker(self._read_engine, expire_on_commit=False)

    def _plain_connection(self) -> sqlite3.Connection:
        """This process's connection for the plain reads: one is enough, since a plain read runs
        whole in the event loop, never interleaved with another. Autocommit: each statement sees
        the newest committed state, and none holds a snapshot between requests."""
        if self._plain is None or self._plain[0] != os.getpid():  # a forked worker opens its own
            path = make_url(self.url).database or ""
            try:
                connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:  # as SQLAlchemy would raise it: `reading()` maps those
                raise sa_exc.DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
            try:
                _sqlite_read_only(connection, None)
            except sqlite3.Error as exc:
                connection.close()
                raise sa_exc.DBAPIError.instance(None, None, exc, sqlite3.Error) from exc
            self._plain = (os.getpid(), connection)
        return self._plain[1]

    def _forget_plain_connection(self) -> None:
        """After an outage: the next plain read opens a fresh connection."""
        if self._plain is not None and self._plain[0] == os.getpid():
            self._plain[1].close()
        self._plain = None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block ends, rolled back on any error.

        The connection is taken first: when the database cannot be reached, the caller gets a
        ServiceUnavailableError (503) instead of whatever the driver raised (asyncpg lets a bare
        ConnectionRefusedError through while PostgreSQL restarts)."""
        async with self._session() as session:
            yield session

    @asynccontextmanager
    async def _session(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        options = {"postgresql_readonly": True} if read_only and not self.is_sqlite else {}
        async with self._sessions() as session, session.begin():
            try:
                await session.connection(execution_options=options)
            except (OSError, sa_exc.SQLAlchemyError) as exc:
                if isinstance(exc, OSError) or database_unavailable(exc):
                    raise unavailable() from exc
                raise
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work for reads that stand alone (nothing of the caller's own
        transaction to see). On SQLite it runs in the event loop (see `InLoopReader`); elsewhere
        it is a READ ONLY transaction (asyncpg has no worker thread to avoid), so that a write
        sent through it fails on every database alike."""
        if self._readers is None:
            async with self._session(read_only=True) as s:
                yield s
            return
        # No begin/commit: the session, if one was needed, is closed (and its connection reset)
        # when the block ends. Typed as AsyncSession so that the repositories take it: it has that
        # class's read methods, and a write through it fails (query_only).
        reader = InLoopReader(self._readers, self._plain_connection)
        try:
            yield cast(AsyncSession, reader)
        except sa_exc.SQLAlchemyError as exc:
            # SQLITE_READONLY here is a write sent through the reader: a bug (500), not an outage.
            if database_unavailable(exc) and _sqlite_code(exc) != sqlite3.SQLITE_READONLY:
                self._forget_plain_connection()
                raise unavailable() from exc
            raise
        finally:
            reader.close()

    async def ping(self) -> None:
        """Raise when the database cannot be reached (on SQLite through a reader: a ping must
        not wait for, nor take, the write lock)."""
        if self._readers is not None:
            async with self.reading() as s:
                await s.execute(text("SELECT 1"))
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def migrate(self, revision: str = "head") -> None:
        await asyncio.to_thread(upgrade, self.url, revision)

    async def close(self) -> None:
        if self._plain is not None and self._plain[0] == os.getpid():
            self._plain[1].close()
        self._plain = None
        await self.engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
