"""What-if: server changes tried out by monkeypatching, measured before (or instead of) being made.

Only the benchmarks use this, through bench/profiled_server.py with VOIDVM_BENCH_WHATIF=<names>.
The database fixes that used to live here (no pool pre-ping or reset on SQLite, the user and the
revoked session in one query, a cheaper VM listing, an async `get_container`) are now in src/, and
`Database.reading()` goes further: on SQLite a stand-alone read runs a synchronous SQLAlchemy
session in the event loop instead of hopping to aiosqlite's worker thread. What is left is one
experiment, which is not meant to ship:

- `syncread`: the two reads of an authenticated `GET /vms` (the principal with its revoked-session
  check, then the page of VMs with its total) go through a plain sqlite3 connection in the event
  loop, with no SQLAlchemy at all. The statements are the ones the repositories send (the page's
  ids from the index, then those rows with their owners, a count only when the page does not tell
  the total), and the rows go through the same converters, so the difference from the shipped
  server is what SQLAlchemy itself (statement caching, execution, result rows, the session) still
  costs on top of SQLite now that the thread hand-offs are gone. Only the default listing (no
  status, search or owner filter, newest first) takes this path; any other query, and every write,
  runs the shipped code.
"""

from __future__ import annotations

from collections.abc import Sequence

PATCHES = ("syncread",)


def apply(names: Sequence[str] = PATCHES) -> None:
    wanted = [name.strip() for name in names if name.strip()]
    unknown = sorted(set(wanted) - set(PATCHES))
    if unknown:
        raise ValueError(f"unknown what-if patch(es) {', '.join(unknown)}; known: {', '.join(PATCHES)}")
    if "syncread" in wanted:
        _syncread()


def _syncread() -> None:
    import sqlite3
    import threading
    from datetime import datetime
    from types import SimpleNamespace
    from typing import Any

    from sqlalchemy import make_url

    from voidvm_server.auth.principal import Principal
    from voidvm_server.domain.models import VM, User, UserStatus
    from voidvm_server.errors import AccountDisabledError, AuthError
    from voidvm_server.persistence.repositories import _user, _vm
    from voidvm_server.services.auth import AuthService
    from voidvm_server.services.vm_requests import VMQuery, parse_sort
    from voidvm_server.services.vms import VMService

    local = threading.local()
    dates = {"created_at", "updated_at", "started_at", "locked_until", "last_login_at"}
    newest_first = "ORDER BY vms.created_at DESC, vms.id"

    def record(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> SimpleNamespace:
        """A row as an object with the column attributes the converters read (like a Row)."""
        fields = {}
        for (name, *_), value in zip(cursor.description, values, strict=True):
            fields[name] = datetime.fromisoformat(value) if value and name in dates else value
        return SimpleNamespace(**fields)

    def connection(url: str) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(make_url(url).database or "", check_same_thread=False)
            conn.row_factory = record
            conn.execute("PRAGMA query_only=ON")  # as the shipped reader: a write fails, never waits
            conn.execute("PRAGMA busy_timeout=1000")
            local.conn = conn
        return conn

    async def live_user(self: AuthService, user_id: str, session_id: str, token_version: int) -> User:
        found = (
            connection(self.db.url)
            .execute(
                "SELECT users.*, revoked_sessions.session_id AS revoked_session FROM users "
                "LEFT JOIN revoked_sessions ON revoked_sessions.session_id = ? WHERE users.id = ?",
                (session_id, user_id),
            )
            .fetchone()
        )
        user = _user(found) if found else None
        if user is None or found.revoked_session is not None or user.token_version != token_version:
            raise AuthError("The token is no longer valid", code="INVALID_TOKEN")
        if user.status is UserStatus.DISABLED:
            raise AccountDisabledError()
        return user

    shipped_list = VMService.list

    async def list_vms(self: VMService, principal: Principal, query: VMQuery) -> tuple[list[VM], int]:
        if query.status or query.search or query.owner or parse_sort(query.sort) != [("created_at", True)]:
            return await shipped_list(self, principal, query)
        conn = connection(self.db.url)
        owner_id = None if principal.is_admin else principal.id
        where, params = ("WHERE vms.owner_id = ?", [owner_id]) if owner_id is not None else ("", [])
        offset, limit = (query.page - 1) * query.limit, query.limit
        rows = conn.execute(
            "SELECT vms.*, users.username AS owner_username FROM vms "  # noqa: S608
            "JOIN users ON users.id = vms.owner_id "
            f"WHERE vms.id IN (SELECT vms.id FROM vms {where} {newest_first} LIMIT ? OFFSET ?) "
            f"{newest_first}",
            [*params, limit, offset],
        ).fetchall()
        vms = [_vm(r, r.owner_username) for r in rows]
        if rows and len(rows) < limit:  # the last page: the total is known without counting
            return vms, offset + len(rows)
        if not rows and offset == 0:
            return vms, 0
        total = conn.execute(f"SELECT count(*) AS n FROM vms {where}", params).fetchone().n  # noqa: S608
        return vms, int(total)

    AuthService._live_user = live_user  # type: ignore[method-assign]
    VMService.list = list_vms  # type: ignore[method-assign]
