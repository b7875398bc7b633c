"""PlainRead: the hot reads straight on sqlite3 answer exactly what SQLAlchemy answers."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import DateTime, bindparam, select
from sqlalchemy import exc as sa_exc

from voidvm_server.domain.models import (
    VM,
    Image,
    ImageFormat,
    ImageStatus,
    Quota,
    Role,
    Usage,
    User,
    UserStatus,
    VMStatus,
)
from voidvm_server.persistence.engine import Database, upgrade
from voidvm_server.persistence.plain_reads import PlainRead
from voidvm_server.persistence.repositories import ImageRepository, UserRepository, VMRepository
from voidvm_server.persistence.tables import UserRow

START = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


def _user(index: int) -> User:
    return User(
        id=f"usr-{index:012x}", username=f"user{index}", email=None, password_hash="x", role=Role.USER,
        status=UserStatus.ACTIVE, quota=Quota(10, 10, 10_000, 100), usage=Usage(), token_version=3,
        failed_logins=0, locked_until=None, created_at=START, updated_at=START, last_login_at=None,
    )  # fmt: skip


def _vm(index: int, owner: User) -> VM:
    return VM(
        id=f"vm-{index:012x}", name=f"box-{index}", description="a 100% _test_" if index % 3 == 0 else "",
        status=[VMStatus.STOPPED, VMStatus.RUNNING, VMStatus.ERROR][index % 3],
        status_reason="broke" if index % 3 == 2 else None, cpu=1 + index % 2, memory_mb=128,
        disk_gb=1, os="tiny", image_id="img-tiny", owner_id=owner.id, owner_name=owner.username,
        ssh_port=2200 + index if index % 2 else None, pid=None,
        created_at=START + timedelta(seconds=index // 2),  # pairs share a time: the id breaks ties
        updated_at=START + timedelta(minutes=index),
        started_at=START + timedelta(hours=1) if index % 3 == 1 else None,
    )  # fmt: skip


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'voidvm.db'}"
    await asyncio.to_thread(upgrade, url)
    database = Database(url)
    owners = [_user(1), _user(2)]
    image = Image(
        id="img-tiny", name="tiny", aliases=[], format=ImageFormat.QCOW2, status=ImageStatus.AVAILABLE,
        status_reason=None, size_bytes=1, virtual_size_bytes=1, is_default=True, source="test",
        created_at=START,
    )  # fmt: skip
    async with database.session() as s:
        await ImageRepository(s).add(image)
        for owner in owners:
            await UserRepository(s).add(owner)
        for index in range(25):
            vm = _vm(index, owners[index % 2])
            await VMRepository(s).add(vm)
            await VMRepository(s).update(vm.id, started_at=vm.started_at)
    yield database
    await database.close()


QUERIES = [
    {"owner_id": None, "status": None, "search": None, "sort": [("created_at", True)]},
    {"owner_id": "usr-000000000001", "status": None, "search": None, "sort": [("created_at", True)]},
    {"owner_id": None, "status": ["running", "error"], "search": None, "sort": [("name", False)]},
    {"owner_id": None, "status": ["stopped"], "search": "100%", "sort": [("cpu", True), ("name", False)]},
    {"owner_id": "usr-000000000002", "status": None, "search": "_test", "sort": [("updated_at", False)]},
]


@pytest.mark.parametrize("query", QUERIES, ids=range(len(QUERIES)))
@pytest.mark.parametrize(("offset", "limit"), [(0, 20), (20, 20), (5, 3), (100, 20)])
async def test_a_list_through_sqlite3_equals_the_one_through_sqlalchemy(
    db: Database, query: dict[str, object], offset: int, limit: int
) -> None:
    async with db.reading() as reader:  # on SQLite: the plain path
        plain = await VMRepository(reader).list(**query, offset=offset, limit=limit)  # type: ignore[arg-type]
    async with db.session() as session:  # SQLAlchemy's own execution
        through_sqlalchemy = await VMRepository(session).list(**query, offset=offset, limit=limit)  # type: ignore[arg-type]
    assert plain == through_sqlalchemy
    assert all(vm.created_at.tzinfo is UTC for vm in plain[0])


async def test_the_principals_read_through_sqlite3_equals_the_one_through_sqlalchemy(db: Database) -> None:
    async with db.session() as s:
        await UserRepository(s).update("usr-000000000001", locked_until=START, last_login_at=START)
    for user_id in ("usr-000000000001", "usr-000000000002", "usr-nobody"):
        async with db.reading() as reader:
            plain = await UserRepository(reader).get_with_session(user_id, "some-session")
        async with db.session() as session:
            expected = await UserRepository(session).get_with_session(user_id, "some-session")
        assert plain == expected
    assert plain == (None, False)  # the last one: no such user
    async with db.reading() as reader:
        user, revoked = await UserRepository(reader).get_with_session("usr-000000000001", "some-session")
    assert user is not None and user.locked_until == START and user.token_version == 3 and not revoked


def test_a_parameter_that_needs_converting_is_refused_when_the_read_is_built() -> None:
    statement = select(UserRow.__table__.c.id).where(
        UserRow.__table__.c.created_at > bindparam("since", type_=DateTime())
    )
    with pytest.raises(TypeError, match="since"):
        PlainRead(statement)


def test_an_sqlite_error_comes_out_as_sqlalchemy_would_raise_it(tmp_path: Path) -> None:
    read = PlainRead(select(UserRow.__table__.c.id).where(UserRow.__table__.c.id == bindparam("id")))
    conn = sqlite3.connect(tmp_path / "empty.db")
    with pytest.raises(sa_exc.OperationalError, match="no such table"):
        read.run(conn, {"id": "usr-1"})
