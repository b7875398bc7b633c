"""Component costs behind every API request, measured in one process (no HTTP, no server).

Each line runs one operation in a loop on a copy of a real VoidVM database (100 VMs) and reports
wall-clock and CPU time (all threads, the aiosqlite worker included) per operation:
- the same primary-key lookup through sqlite3, aiosqlite and SQLAlchemy Core on an open connection;
- the two reads of an authenticated `GET /vms` (`UserRepository.get_with_session`, then
  `VMRepository.list`, a page of 20 of 100 with its count), each in a unit of work of its own from
  `Database.session()` (an AsyncSession over aiosqlite's worker thread) and from
  `Database.reading()` (on SQLite, a synchronous session in the event loop), as the services use them;
- what an authenticated request pays before its route runs (JWT decode, `AuthService.authenticate`
  as shipped, the rate limiter with a long moving window).
Run: .venv/bin/python -m bench.micro [--n 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.common import voidvm_server
from bench.report import Section, Table
from bench.seed import seed_vms

Op = Callable[[], Awaitable[object]]


def cpu() -> float:
    return time.process_time()  # every thread of this process: the aiosqlite worker too


async def measure_all(ops: dict[str, Op], n: int, rounds: int = 7) -> list[tuple[str, float, float]]:
    """Each operation n times, in rounds that go through every operation in turn (so that a burst of
    load elsewhere hits all of them alike); per operation, the median over rounds of the mean wall
    and CPU time per call, in microseconds."""
    for fn in ops.values():
        for _ in range(20):
            await fn()
    walls: dict[str, list[float]] = {k: [] for k in ops}
    cpus: dict[str, list[float]] = {k: [] for k in ops}
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for label, fn in ops.items():
            wall, used = time.perf_counter(), cpu()
            for _ in range(per_round):
                await fn()
            walls[label].append((time.perf_counter() - wall) / per_round * 1e6)
            cpus[label].append((cpu() - used) / per_round * 1e6)
    return [(k, statistics.median(walls[k]), statistics.median(cpus[k])) for k in ops]


async def run_all(db_path: Path, token: str, n: int) -> list[tuple[str, float, float]]:
    import aiosqlite
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from voidvm_server.auth.tokens import TokenService, load_or_create_secret
    from voidvm_server.config import Settings
    from voidvm_server.persistence.engine import Database
    from voidvm_server.persistence.repositories import UserRepository, VMRepository
    from voidvm_server.persistence.tables import UserRow
    from voidvm_server.services.auth import AuthService
    from voidvm_server.services.ratelimit import RateLimiter

    user_id = sqlite3.connect(db_path).execute("SELECT id FROM users WHERE username='admin'").fetchone()[0]
    sql = "SELECT * FROM users WHERE id = ?"
    url = f"sqlite+aiosqlite:///{db_path}"
    settings = Settings(data_dir=db_path.parent)
    tokens = TokenService(
        load_or_create_secret(db_path.parent),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=3600,
        refresh_ttl=3600,
    )
    claims = tokens.decode(token, kind="access")
    assert claims.user_id == user_id, "the token is not the admin's"
    newest_first = [("created_at", True)]  # the default listing, as GET /vms asks for it
    ops: dict[str, Op] = {}
    async with contextlib.AsyncExitStack() as stack:
        sync = sqlite3.connect(db_path)
        stack.callback(sync.close)
        adb = await stack.enter_async_context(aiosqlite.connect(db_path))
        engine = create_async_engine(url)
        stack.push_async_callback(engine.dispose)
        conn = await stack.enter_async_context(engine.connect())
        db = Database(url)
        stack.push_async_callback(db.close)
        auth = AuthService(db, tokens, RateLimiter(), settings)

        async def sqlite_sync() -> object:
            return sync.execute(sql, (user_id,)).fetchall()

        async def aio() -> object:
            async with adb.execute(sql, (user_id,)) as cursor:
                return await cursor.fetchall()

        async def core() -> object:
            return (await conn.execute(select(UserRow.__table__).where(UserRow.id == user_id))).all()

        async def decode() -> object:
            return tokens.decode(token)

        ops["sqlite3 (sync, in the event loop)"] = sqlite_sync
        ops["aiosqlite (thread hand-offs)"] = aio
        ops["SQLAlchemy Core, one open connection"] = core
        ops["TokenService.decode (JWT HS256)"] = decode
        for unit in ("session", "reading"):

            async def principal(unit: str = unit) -> object:
                async with getattr(db, unit)() as s:
                    return await UserRepository(s).get_with_session(user_id, claims.session_id)

            async def page(unit: str = unit) -> object:
                async with getattr(db, unit)() as s:
                    return await VMRepository(s).list(
                        owner_id=None, status=None, search=None, sort=newest_first, offset=0, limit=20
                    )

            ops[f"{unit}() + UserRepository.get_with_session"] = principal
            ops[f"{unit}() + VMRepository.list, 20 of 100"] = page

        async def authenticate() -> object:
            return await auth.authenticate(token)

        ops["AuthService.authenticate (as shipped: decode + reading)"] = authenticate
        for window in (100, 10_000):
            limiter = RateLimiter()
            item = limiter.parse("1000000/minute")
            for _ in range(window):
                await limiter.hit(item, "api", "user:x")

            async def hit(limiter: RateLimiter = limiter, item: object = item) -> object:
                return await limiter.hit(item, "api", "user:x")  # type: ignore[arg-type]

            ops[f"RateLimiter.hit, {window:,} requests in the window"] = hit
        return await measure_all(ops, n)


def run(n: int = 500) -> Section:
    section = Section(
        "micro", "Component costs (one process, no HTTP)", f".venv/bin/python -m bench.micro --n {n}"
    )
    with voidvm_server() as server, tempfile.TemporaryDirectory() as tmp:
        seed_vms(server.db_path, 100, str(server.tiny_image()["id"]))
        copy = Path(tmp) / "voidvm.db"
        with sqlite3.connect(server.db_path) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        (Path(tmp) / "jwt-secret").write_bytes((server.data_dir / "jwt-secret").read_bytes())
        (Path(tmp) / "jwt-secret").chmod(0o600)
        rows = asyncio.run(run_all(copy, server.token, n))
    section.tables.append(
        Table(
            ["operation", "wall us/op", "CPU us/op"],
            [[label, f"{wall:.0f}", f"{used:.0f}"] for label, wall, used in rows],
            f"{n} sequential calls each after 20 warm-up ones, in 7 interleaved rounds; median of the rounds",
        )
    )
    by = {label: wall for label, wall, _ in rows}
    by_cpu = {label: used for label, _, used in rows}
    hop = by["aiosqlite (thread hand-offs)"] - by["sqlite3 (sync, in the event loop)"]
    principal = "() + UserRepository.get_with_session"
    page = "() + VMRepository.list, 20 of 100"
    saved = [by[f"session{op}"] - by[f"reading{op}"] for op in (principal, page)]
    saved_cpu = [by_cpu[f"session{op}"] - by_cpu[f"reading{op}"] for op in (principal, page)]
    authenticate = "AuthService.authenticate (as shipped: decode + reading)"
    decode = by["TokenService.decode (JWT HS256)"]
    shipped = by[authenticate] + by[f"reading{page}"]
    shipped_cpu = by_cpu[authenticate] + by_cpu[f"reading{page}"]
    through_session = decode + by[f"session{principal}"] + by[f"session{page}"]
    section.reading.append(
        f"A primary-key lookup costs {by['sqlite3 (sync, in the event loop)']:.0f} us in SQLite itself, "
        f"{by['aiosqlite (thread hand-offs)']:.0f} us through aiosqlite ({hop:.0f} us of thread hand-offs: "
        f"every statement is four of them, cursor/execute/fetchall/close) and "
        f"{by['SQLAlchemy Core, one open connection']:.0f} us through SQLAlchemy Core on an open "
        f"connection."
    )
    section.reading.append(
        f"`Database.reading()` (a synchronous session in the event loop) instead of `Database.session()` "
        f"(an AsyncSession over aiosqlite) saves {saved[0]:.0f} us of wall time ({saved_cpu[0]:.0f} us "
        f"of CPU) on the principal's read and {saved[1]:.0f} us ({saved_cpu[1]:.0f} us of CPU) on the "
        f"page of 20 VMs with its count: {by[f'reading{principal}']:.0f} and "
        f"{by[f'reading{page}']:.0f} us left, against {by['sqlite3 (sync, in the event loop)']:.0f} us "
        f"for a bare sqlite3 lookup."
    )
    section.reading.append(
        f"The database part of an authenticated `GET /vms` (`AuthService.authenticate`, JWT included, "
        f"then `VMRepository.list` through `reading()`) costs {shipped / 1000:.2f} ms "
        f"({shipped_cpu / 1000:.2f} ms of CPU) as shipped; the same two reads through `session()` "
        f"would take about {through_session / 1000:.2f} ms."
    )
    section.data = {"rows": rows}
    return section.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    section = run(args.n)
    section.print()
    if not args.no_save:
        section.save()


if __name__ == "__main__":
    main()
