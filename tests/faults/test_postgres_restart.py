"""PostgreSQL restarted (and briefly down) under load (issue #7, case 8).

The test runs its own throw-away PostgreSQL cluster (initdb into a temporary directory, on a free
loopback port) rather than restarting the machine's shared cluster: other test runs on the same
machine keep their database, and nothing can leave the shared server down. The cluster is
destroyed at the end whatever happens.

A real server process on a fresh database in that cluster gets a steady loop of requests while
PostgreSQL restarts (`pg_ctl restart -m fast`, which ends every open connection) and then stops
for a moment. Requests in flight fail cleanly (the envelope, 503 SERVICE_UNAVAILABLE), requests
made while it is down are 503, and once it is back requests succeed without restarting VoidVM
(pool_pre_ping replaces the dead connections). VMs whose state change the database did not take
are put right by the server itself (no VM is left `creating`, quotas match the rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import IN_CI
from tests.faults.conftest import Http, ServerFactory, assert_consistent, free_port, metric, poll

pytestmark = [pytest.mark.postgres, pytest.mark.qemu]
WORKERS = 4


def _pg_ctl() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1] if found else None


def _unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (to run a private PostgreSQL as the postgres user)"
    if _pg_ctl() is None:
        return "PostgreSQL server binaries are not installed (make test installs them)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres user"
    return None


class PrivateCluster:
    """A throw-away PostgreSQL cluster owned by the postgres user, on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        pg_ctl = _pg_ctl()
        assert pg_ctl is not None
        self.bin = pg_ctl.parent
        self.root = Path(tempfile.mkdtemp(prefix="voidvm-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        user = pwd.getpwnam("postgres")
        os.chown(self.root, user.pw_uid, user.pw_gid)
        for name in ("ctl.log", "server.log"):
            (self.root / name).touch()
            os.chown(self.root / name, user.pw_uid, user.pw_gid)

    def _run(self, *argv: str, check: bool = True, timeout: float = 90) -> None:
        # Output to a file, never a pipe: a postmaster started by pg_ctl would inherit the pipe
        # and keep it open, and we would wait for an EOF that comes only when it exits.
        with (self.root / "ctl.log").open("ab") as out:
            result = subprocess.run(["runuser", "-u", "postgres", "--", *argv], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, timeout=timeout, check=False)  # fmt: skip
        if check and result.returncode != 0:
            logs = "".join(p.read_text(errors="replace")[-2000:] for p in self.root.glob("*.log"))
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}):\n{logs}")

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")  # fmt: skip

    def pg_ctl(self, *args: str, check: bool = True) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args, check=check)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-l", str(self.root / "server.log"), "-o", options, "start")

    def restart(self) -> None:
        self.pg_ctl("-l", str(self.root / "server.log"), "-m", "fast", "restart")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Any:
    reason = _unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = PrivateCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all
    code: str | None


@dataclass
class Load:
    http: Http
    outcomes: list[Outcome] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            op = i % 3
            if op == 0:
                await self._call("GET", "/vms")
            elif op == 1:
                await self._call("GET", "/auth/me")
            else:
                body = await self._call("POST", "/vms", json={"name": f"w{n}-{i}", "cpu": 1, "memory": 64,
                                                              "disk": 1})  # fmt: skip
                if body is not None and body.get("success"):
                    await self._call("DELETE", f"/vms/{body['data']['id']}")
            await asyncio.sleep(0.01)

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        began = time.monotonic()
        try:
            response = await self.http.client.request(method, path, **kwargs)
        except httpx.HTTPError:
            self.outcomes.append(Outcome(began, time.monotonic(), None, None))
            return None
        body: dict[str, Any] = response.json()  # always the envelope, never an HTML page or trace
        code = None if body.get("success") else body["error"]["code"]
        self.outcomes.append(Outcome(began, time.monotonic(), response.status_code, code))
        return body

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.started >= start and o.ended <= end]


async def test_postgres_restart_under_load(servers: ServerFactory, private_postgres: PrivateCluster) -> None:
    pg = private_postgres
    admin = await asyncpg.connect(pg.admin_url)
    try:
        await admin.execute('CREATE DATABASE "voidvm"')
    finally:
        await admin.close()
    server = await servers(database_url=pg.url("voidvm"))
    await server.start()
    server_pid = server.pid
    async with server.api(timeout=60) as http:
        load = Load(http)
        workers = [asyncio.ensure_future(load.worker(n)) for n in range(WORKERS)]
        try:
            await asyncio.sleep(1.5)
            steady_end = time.monotonic()

            # 1. A restart: every pooled connection is cut while requests use them.
            restart_began = time.monotonic()
            await asyncio.to_thread(pg.restart)
            restart_ended = time.monotonic()
            await asyncio.sleep(3)

            # 2. Down for a moment: every request in that time is a clean 503.
            await asyncio.to_thread(pg.pg_ctl, "-m", "fast", "stop")
            down_began = time.monotonic()
            await asyncio.sleep(1.5)
            down_ended = time.monotonic()
            await asyncio.to_thread(pg.start)
            up_again = time.monotonic()
            await asyncio.sleep(3)
        finally:
            load.stop.set()
            await asyncio.gather(*workers)

        everything = load.outcomes
        statuses = Counter((o.status, o.code) for o in everything)
        metric("pg_restart_seconds", round(restart_ended - restart_began, 2))
        metric("pg_requests", len(everything))
        metric("pg_outcomes", dict(statuses))
        assert all(o.status is not None for o in everything), "the server stopped answering"
        allowed = {(200, None), (201, None), (503, "SERVICE_UNAVAILABLE"), (500, "INTERNAL_SERVER_ERROR")}
        assert set(statuses) <= allowed, statuses
        internal = statuses[(500, "INTERNAL_SERVER_ERROR")]
        metric("pg_internal_errors", internal)
        assert internal == 0, "a database outage must answer 503, not 500"

        steady = load.between(0, steady_end)
        assert steady and all(o.status in (200, 201) for o in steady)
        during_restart = load.between(restart_began - 1.0, restart_ended + 1.0)
        metric("pg_failed_around_restart", sum(o.status == 503 for o in during_restart))
        after_restart = load.between(restart_ended + 1.0, down_began - 0.5)
        assert after_restart and all(o.status in (200, 201) for o in after_restart), after_restart
        while_down = load.between(down_began, down_ended)
        assert while_down and all(o.code == "SERVICE_UNAVAILABLE" for o in while_down), while_down
        metric("pg_requests_while_down", len(while_down))
        # Back without a VoidVM restart: the last requests all succeed.
        recovered = [o for o in everything if o.started >= up_again + 1.0]
        assert recovered and all(o.status in (200, 201) for o in recovered), Counter(
            o.status for o in recovered
        )
        first_ok = min(o.ended for o in everything if o.started >= up_again and o.status in (200, 201))
        metric("pg_first_success_after_start_seconds", round(first_ok - up_again, 2))
        assert server.process is not None and server.process.poll() is None and server.pid == server_pid

        # Nothing half-done stays: creates and deletes cut off by the outage are put right.
        async def consistent() -> bool:
            with contextlib.suppress(AssertionError):
                vms = await assert_consistent(http, server.data_dir)
                return all(vm["status"] == "stopped" for vm in vms)
            return False

        await poll(consistent, timeout=30, interval=0.5, what="the VMs to settle")
        for vm in await http.vms():
            await http.delete(vm["id"])
        assert (await http.usage())["vms"] == 0
