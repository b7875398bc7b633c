"""What-if: the database fixes proposed in docs/benchmarks.md, applied by monkeypatching.

Only the benchmarks use this (through bench/profiled_server.py with VOIDVM_BENCH_WHATIF=1), to
measure what the proposed server changes would buy before anyone makes them. Each patch keeps the
behaviour of the code it replaces; the real fix belongs in src/, where the patch names point.

- `engine`: SQLite engines without `pool_pre_ping` (a local file cannot drop a connection; the ping
  is a `SELECT 1` through aiosqlite's worker thread on every session) and without the rollback
  that the pool runs when a connection comes back after the session already committed.
  (persistence/engine.py, Database.__init__)
- `auth`: the user and the revoked-session check in one statement (an outer join) instead of two.
  (services/auth.py, AuthService._live_user)
- `list`: the page and the total in one statement (`count(*) OVER ()`), a separate count only for a
  page past the end. (persistence/repositories.py, VMRepository.list)
- `deps`: `get_container` as an `async def`. FastAPI runs a plain `def` dependency in its thread
  pool, so every request that needs the container (all of them) hops to a worker thread and back.
  (api/deps.py, get_container; must be applied before the routes are imported)
- `syncread` (an experiment, not a proposal as it stands): the two reads of an authenticated
  `GET /vms` (the principal, the page with its total) run on a plain sqlite3 connection inside the
  event loop, with no SQLAlchemy session and no worker thread, to show what the access layer costs. SQLite
  in WAL mode never makes a reader wait for a writer, and these queries take tens of microseconds.
  Only the default listing (owner filter or none, sort by creation time) takes this path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

PATCHES = ("engine", "auth", "list")


def apply(names: Sequence[str] = PATCHES) -> None:
    if "engine" in names:
        _engine()
    if "auth" in names:
        _auth()
    if "list" in names:
        _list()
    if "syncread" in names:
        _syncread()
    if "deps" in names:
        _deps()


def _deps() -> None:
    import sys
    from typing import Annotated

    from fastapi import Depends, Request

    from voidvm_server.api import deps
    from voidvm_server.api.container import Container

    if "voidvm_server.api.routes.vms" in sys.modules:
        raise RuntimeError("the 'deps' patch must be applied before the routes are imported")

    async def get_container(request: Request) -> Container:
        container: Container = request.app.state.container
        return container

    get_container.__annotations__ = {"request": Request, "return": Container}  # resolved, for FastAPI

    deps.get_container = get_container  # type: ignore[assignment]
    deps.ContainerDep = Annotated[Container, Depends(get_container)]  # type: ignore[misc]


def _create_engine(url: str, **kwargs: Any) -> Any:
    from sqlalchemy.ext import asyncio as sa_asyncio

    if url.startswith("sqlite"):
        kwargs["pool_pre_ping"] = False
        kwargs["pool_reset_on_return"] = None
    return sa_asyncio.create_async_engine(url, **kwargs)


def _engine() -> None:
    from voidvm_server.persistence import engine as engine_module

    engine_module.create_async_engine = _create_engine  # type: ignore[assignment]


@contextmanager
def fixed_engine() -> Iterator[None]:
    """Databases created inside the block get the `engine` fix (for side-by-side measurements)."""
    from voidvm_server.persistence import engine as engine_module

    original = engine_module.create_async_engine
    engine_module.create_async_engine = _create_engine  # type: ignore[assignment]
    try:
        yield
    finally:
        engine_module.create_async_engine = original


def _auth() -> None:
    from voidvm_server.services.auth import AuthService

    AuthService._live_user = fixed_live_user()  # type: ignore[method-assign]


def fixed_live_user() -> Any:
    from sqlalchemy import select

    from voidvm_server.domain.models import User, UserStatus
    from voidvm_server.errors import AuthError
    from voidvm_server.persistence.repositories import _user
    from voidvm_server.persistence.tables import RevokedSessionRow, UserRow
    from voidvm_server.services.auth import AuthService

    async def _live_user(self: AuthService, user_id: str, session_id: str, token_version: int) -> User:
        query = (
            select(UserRow, RevokedSessionRow.session_id)
            .outerjoin(RevokedSessionRow, RevokedSessionRow.session_id == session_id)
            .where(UserRow.id == user_id)
        )
        async with self.db.session() as s:
            row = (await s.execute(query)).first()
        user = _user(row[0]) if row else None
        revoked = row is not None and row[1] is not None
        if user is None or revoked or user.token_version != token_version:
            raise AuthError("The token is no longer valid", code="INVALID_TOKEN")
        if user.status is UserStatus.DISABLED:
            raise AuthError("The account is disabled", code="ACCOUNT_DISABLED")
        return user

    return _live_user


def _list() -> None:
    from voidvm_server.persistence.repositories import VMRepository

    VMRepository.list = fixed_list()  # type: ignore[method-assign]


def fixed_list() -> Any:
    from sqlalchemy import func, or_, select

    from voidvm_server.domain.models import VM
    from voidvm_server.persistence.repositories import SORTABLE, VMRepository, _vm
    from voidvm_server.persistence.tables import VMRow

    async def list_vms(
        self: VMRepository,
        *,
        owner_id: str | None,
        status: Sequence[str] | None,
        search: str | None,
        sort: Sequence[tuple[str, bool]],
        offset: int,
        limit: int,
    ) -> tuple[list[VM], int]:
        query = self._select().add_columns(func.count().over().label("total"))
        conditions = []
        if owner_id is not None:
            conditions.append(VMRow.owner_id == owner_id)
        if status:
            conditions.append(VMRow.status.in_(list(status)))
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conditions.append(
                or_(VMRow.name.ilike(pattern, escape="\\"), VMRow.description.ilike(pattern, escape="\\"))
            )
        for condition in conditions:
            query = query.where(condition)
        order = [SORTABLE[key].desc() if desc else SORTABLE[key].asc() for key, desc in sort]
        rows = (
            await self.session.execute(query.order_by(*order, VMRow.id).offset(offset).limit(limit))
        ).all()
        if rows:
            total = int(rows[0][2])
        elif offset == 0:
            total = 0
        else:  # a page past the end: the window has no row to carry the total
            count = select(func.count()).select_from(VMRow)
            for condition in conditions:
                count = count.where(condition)
            total = int(await self.session.scalar(count) or 0)
        return [_vm(r[0], r[1]) for r in rows], total

    return list_vms


def _syncread() -> None:
    import sqlite3
    import threading
    from datetime import datetime
    from types import SimpleNamespace

    from voidvm_server.auth.principal import Principal
    from voidvm_server.domain.models import VM, User, UserStatus
    from voidvm_server.errors import AuthError
    from voidvm_server.persistence.repositories import _user, _vm
    from voidvm_server.services.auth import AuthService
    from voidvm_server.services.vms import VMQuery, VMService, parse_sort

    local = threading.local()
    dates = {"created_at", "updated_at", "started_at", "locked_until", "last_login_at"}

    def connection(url: str) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(url.split(":///", 1)[1], check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            local.conn = conn
        return conn

    def row(r: sqlite3.Row) -> SimpleNamespace:
        values = {k: (datetime.fromisoformat(r[k]) if k in dates and r[k] else r[k]) for k in r.keys()}  # noqa: SIM118
        return SimpleNamespace(**values)

    async def _live_user(self: AuthService, user_id: str, session_id: str, token_version: int) -> User:
        conn = connection(self.db.url)
        found = conn.execute(
            "SELECT users.*, (SELECT 1 FROM revoked_sessions WHERE session_id = ?) AS revoked "
            "FROM users WHERE id = ?",
            (session_id, user_id),
        ).fetchone()
        user = _user(row(found)) if found else None  # type: ignore[arg-type]
        if user is None or found["revoked"] or user.token_version != token_version:
            raise AuthError("The token is no longer valid", code="INVALID_TOKEN")
        if user.status is UserStatus.DISABLED:
            raise AuthError("The account is disabled", code="ACCOUNT_DISABLED")
        return user

    original_list = VMService.list

    async def service_list(self: VMService, principal: Principal, query: VMQuery) -> tuple[list[VM], int]:
        if query.status or query.search or query.owner or parse_sort(query.sort) != [("created_at", True)]:
            return await original_list(self, principal, query)
        conn = connection(self.db.url)
        owner_id = None if principal.is_admin else principal.id
        where, params = ("WHERE vms.owner_id = ?", [owner_id]) if owner_id else ("", [])
        found = conn.execute(
            f"SELECT vms.*, users.username AS owner_username, count(*) OVER () AS total FROM vms "  # noqa: S608
            f"JOIN users ON users.id = vms.owner_id {where} "
            f"ORDER BY vms.created_at DESC, vms.id LIMIT ? OFFSET ?",
            [*params, query.limit, (query.page - 1) * query.limit],
        ).fetchall()
        if found:
            total = int(found[0]["total"])
        else:
            total = int(conn.execute(f"SELECT count(*) FROM vms {where}", params).fetchone()[0])  # noqa: S608
        return [_vm(row(r), r["owner_username"]) for r in found], total  # type: ignore[arg-type]

    AuthService._live_user = _live_user  # type: ignore[method-assign]
    VMService.list = service_list  # type: ignore[method-assign]
