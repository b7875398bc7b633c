"""`Database.reading()` on SQLite and PostgreSQL: read-only, in step with committed writes, and a
503 when the database cannot be reached."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from voidvm_server.errors import ServiceUnavailableError
from voidvm_server.persistence.engine import Database, upgrade


@pytest.fixture
async def db(database_url: str) -> Database:
    await asyncio.to_thread(upgrade, database_url)
    database = Database(database_url)
    yield database  # type: ignore[misc]
    await database.close()


async def _config_keys(db: Database) -> list[str]:
    async with db.reading() as s:
        return [row[0] for row in (await s.execute(text("SELECT key FROM config ORDER BY key"))).all()]


async def test_a_committed_write_is_seen_by_the_next_read(db: Database) -> None:
    assert await _config_keys(db) == []
    async with db.session() as s:
        await s.execute(
            text("INSERT INTO config (key, value, updated_at) VALUES ('a', '{}', '2026-01-01 00:00:00')")
        )
    assert await _config_keys(db) == ["a"]


async def test_a_write_through_the_reader_fails_as_a_bug_not_as_an_outage(db: Database) -> None:
    with pytest.raises(sa_exc.DBAPIError, match=r"(?i)read-?only"):
        async with db.reading() as s:
            await s.execute(
                text("INSERT INTO config (key, value, updated_at) VALUES ('b', '{}', '2026-01-01 00:00:00')")
            )
    assert await _config_keys(db) == []


async def test_an_unreachable_database_is_a_503(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'voidvm.db'}")
    try:
        with pytest.raises(ServiceUnavailableError):
            async with database.reading() as s:
                await s.execute(text("SELECT 1 FROM config"))
    finally:
        await database.close()


async def test_an_unreachable_database_is_a_503_for_a_plain_read_too(tmp_path: Path) -> None:
    """The hot reads that skip SQLAlchemy (persistence/plain_reads.py) fail as its reads do."""
    from voidvm_server.persistence.repositories import UserRepository

    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'voidvm.db'}")
    try:
        with pytest.raises(ServiceUnavailableError):
            async with database.reading() as s:
                await UserRepository(s).get_with_session("usr-1", "session")
    finally:
        await database.close()
