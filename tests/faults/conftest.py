"""Fault-test fixtures: a real `voidvm-server serve` that a test may kill -9 and start again on the
same data directory, HTTP helpers for it, the consistency check every fault test ends with, and
probes of a process (descriptors, threads, RSS, zombies).

Everything here stops by itself: every server is killed at the end of its test and every QEMU
whose command line names the test's directory is killed (`no_qemu_left_behind` then fails the
test if one had to be). Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TCG_SCALE, let_tiny_serve_ssh, make_settings
from tests.integration.conftest import TINY_VM, kill_qemus, poll, qemu_pids
from tests.integration.conftest import no_qemu_left_behind as no_qemu_left_behind  # autouse here too
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE
from voidvm_server.persistence.engine import Database
from voidvm_server.services.images import ImageService

__all__ = ["poll", "qemu_pids"]  # re-exported for the tests of this package
ROOT = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 90 * TCG_SCALE  # several guests booting at once under tcg on two cores
READY_LINE = "VoidVM tiny guest ready"
SERVER_START_TIMEOUT = 60.0
STABLE = {"running", "paused", "stopped", "error"}


def metric(name: str, value: object) -> None:
    """Print one measured number; `pytest -s` shows them (docs/reliability.md quotes them)."""
    print(f"\nFAULT-METRIC {name} = {value}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a real server process --------------------------------------------------------------------
@dataclass
class ServerProcess:
    """One data directory served by `voidvm-server serve` subprocesses, one after the other."""

    data_dir: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    token: str = ""
    starts: int = 0
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def db_path(self) -> Path:
        return self.data_dir / "voidvm.db"

    @property
    def vms_dir(self) -> Path:
        return self.data_dir / "vms"

    def marker(self, point: str) -> Path:
        return self.data_dir / f"paused-at-{point}"

    async def start(self, **env: str) -> None:
        """Start a server process (env overrides, e.g. VOIDVM_TEST_PAUSE_AT) and log in."""
        assert self.process is None or self.process.poll() is not None, "already running"
        for stale in self.data_dir.glob("paused-at-*"):
            stale.unlink()
        self.process = self._spawn(env)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(f"the server exited during start-up:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the server did not answer within {SERVER_START_TIMEOUT}s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.05)
            response = await client.post(
                f"{self.url}/auth/login", json={"username": "admin", "password": "admin123"}, timeout=30
            )
            assert response.status_code == 200, response.text
            self.token = response.json()["token"]

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.starts += 1
        with (self.data_dir / "server.log").open("ab") as server_log:
            server_log.write(f"\n===== start {self.starts} {env} =====\n".encode())
            server_log.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "voidvm_server.cli", "serve", "--skip-tiny-image"],
                env={**self.env, **env},
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a test's Ctrl-C must not reach it first
            )
        self.pids.append(process.pid)
        return process

    def kill9(self) -> None:
        """SIGKILL the server (its QEMUs are not its children and live on)."""
        assert self.process is not None and self.process.poll() is None, "not running"
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_tail(self, size: int = 4000) -> str:
        return (self.data_dir / "server.log").read_text(errors="replace")[-size:]

    @asynccontextmanager
    async def api(self, timeout: float = 120) -> AsyncIterator[Http]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout) as client:
            yield Http(client)

    def wait_marker(self, point: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.marker(point).exists():
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            if time.monotonic() > deadline:
                pytest.fail(f"the server never reached {point}:\n{self.log_tail()}")
            time.sleep(0.02)


def server_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("VOIDVM_")}
    return {
        **inherited,
        "VOIDVM_DATA_DIR": str(data_dir),
        "VOIDVM_HOST": "127.0.0.1",
        "VOIDVM_PORT": str(port),
        "VOIDVM_ACCEL": "tcg",
        "VOIDVM_RATE_LIMIT": "1000000/minute",
        "VOIDVM_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
        "VOIDVM_IMAGE_DOWNLOADS": "false",
        "VOIDVM_IMAGE_URL_IMPORTS": "false",
        "VOIDVM_DEFAULT_MAX_VMS": "500",
        "VOIDVM_DEFAULT_MAX_CPUS": "10000",
        "VOIDVM_DEFAULT_MAX_MEMORY_MB": "10000000",
        "VOIDVM_DEFAULT_MAX_DISK_GB": "100000",
        "VOIDVM_STOP_TIMEOUT_SECONDS": str(30 * TCG_SCALE),
        "VOIDVM_STATS_INTERVAL_SECONDS": "2",
        "VOIDVM_LOG_LEVEL": "INFO",
        **extra,
    }


async def install_tiny(data_dir: Path, tiny: tuple[Path, Path], database_url: str | None = None) -> None:
    """Put the tiny guest into a fresh data dir (what `serve` would build, minus the build)."""
    settings = make_settings(data_dir, database_url=database_url)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.resolved_database_url)
    try:
        await db.migrate()
        images = ImageService(db, settings, QemuImg())
        await images.register_kernel_image("tiny", tiny[0], tiny[1], TINY_KERNEL_CMDLINE, default=True)
        await let_tiny_serve_ssh(db)  # the fault tests check that SSH forwards survive them
    finally:
        await db.close()


class ServerFactory:
    def __init__(self, root: Path, tiny: tuple[Path, Path]) -> None:
        self.root = root
        self.tiny = tiny
        self.servers: list[ServerProcess] = []

    async def __call__(self, name: str = "d", database_url: str | None = None, **env: str) -> ServerProcess:
        """A server on a fresh data dir (not started yet). `env` holds for every start."""
        data_dir = self.root / name
        await install_tiny(data_dir, self.tiny, database_url)
        port = free_port()
        extra = {"VOIDVM_DATABASE_URL": database_url} if database_url else {}
        server = ServerProcess(data_dir, port, server_env(data_dir, port, **extra, **env))
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
                server.process.wait(10)
        kill_qemus(str(self.root))
        deadline = time.monotonic() + 10
        while qemu_pids(str(self.root)) and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def servers(tmp_path: Path, tiny_image: tuple[Path, Path]) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path, tiny_image)
    try:
        yield factory
    finally:
        factory.close()


# -- HTTP helpers -------------------------------------------------------------------------------
@dataclass
class Http:
    client: httpx.AsyncClient

    async def create_vm(self, name: str, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/vms", json={"name": name, **TINY_VM, **body})
        assert response.status_code == 201, response.text
        vm: dict[str, Any] = response.json()["data"]
        return vm

    async def vm(self, vm_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/vms/{vm_id}")
        assert response.status_code == 200, response.text
        vm: dict[str, Any] = response.json()["data"]
        return vm

    async def vms(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            response = await self.client.get("/vms", params={"limit": 100, "page": page})
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            found += data["vms"]
            if page >= data["pagination"]["pages"]:
                return found
            page += 1

    async def action(self, vm_id: str, name: str, expect: int = 200, **body: Any) -> dict[str, Any]:
        response = await self.client.post(f"/vms/{vm_id}/{name}", json=body)
        assert response.status_code == expect, f"{name}: {response.status_code} {response.text}"
        payload: dict[str, Any] = response.json()
        return payload

    async def delete(self, vm_id: str, force: bool = False, expect: int = 200) -> None:
        response = await self.client.delete(f"/vms/{vm_id}", params={"force": str(force).lower()})
        assert response.status_code == expect, response.text

    async def live(self, vm_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/vms/{vm_id}/status")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def console_log(self, vm_id: str) -> str:
        response = await self.client.get(f"/vms/{vm_id}/console/log", params={"tail": 1024 * 1024})
        assert response.status_code == 200, response.text
        log: str = response.json()["data"]["log"]
        return log

    async def usage(self) -> dict[str, int]:
        response = await self.client.get("/auth/me")
        assert response.status_code == 200, response.text
        usage: dict[str, int] = response.json()["data"]["usage"]
        return usage

    async def wait_console(self, vm_id: str, text: str, timeout: float = BOOT_TIMEOUT) -> None:
        async def seen() -> bool:
            return text in await self.console_log(vm_id)

        await poll(seen, timeout=timeout, interval=0.25, what=f"{text!r} on {vm_id}'s console")

    async def wait_status(self, vm_id: str, status: str, timeout: float = 15 * TCG_SCALE) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            vm = await self.vm(vm_id)
            return vm if vm["status"] == status else None

        return await poll(reached, timeout=timeout, what=f"{vm_id} to become {status}")


# -- the invariant every fault test ends with -----------------------------------------------------
async def assert_consistent(http: Http, data_dir: Path) -> list[dict[str, Any]]:
    """Rows, processes, disks and quota agree.

    - every VM is in a settled status, and an `error` says why;
    - a running or paused VM has exactly one QEMU, the pid the API reports; no other VM has one;
    - every VM has its run directory with a whole disk; no run directory lacks a VM; no partial disk;
    - no QEMU of this data dir belongs to no VM;
    - the owner's quota usage is the sum of its VMs.
    """
    vms = await http.vms()
    ids = {vm["id"] for vm in vms}
    for vm in vms:
        assert vm["status"] in STABLE, vm
        if vm["status"] == "error":
            assert vm["status_reason"], vm
        live = await http.live(vm["id"])
        pids = qemu_pids(vm["id"])
        if vm["status"] in {"running", "paused"}:
            assert pids == [live["pid"]], (vm, live, pids)
        else:
            assert pids == [], (vm, pids)
        run_dir = data_dir / "vms" / vm["id"]
        assert (run_dir / "disk.qcow2").is_file(), vm
    run_dirs = {p.name for p in (data_dir / "vms").iterdir()} if (data_dir / "vms").exists() else set()
    assert run_dirs == ids, f"run dirs {run_dirs ^ ids} disagree with the VM rows"
    assert not list((data_dir / "vms").glob("*/*.part")), "a partial disk was left behind"
    all_pids = set(qemu_pids(str(data_dir)))
    owned = {pid for vm in vms for pid in qemu_pids(vm["id"])}
    assert all_pids == owned, f"QEMU processes of no VM: {all_pids - owned}"
    usage = await http.usage()
    expected = {
        "vms": len(vms),
        "cpus": sum(vm["cpu"] for vm in vms),
        "memory_mb": sum(vm["memory"] for vm in vms),
        "disk_gb": sum(vm["disk"] for vm in vms),
    }
    assert {k: usage[k] for k in expected} == expected, (usage, expected)
    return vms


def sqlite_integrity(db_path: Path) -> tuple[str, list[Any]]:
    """PRAGMA integrity_check and foreign_key_check on a SQLite file (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        foreign = conn.execute("PRAGMA foreign_key_check").fetchall()
    return str(integrity), foreign


# -- process probes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcSample:
    fds: int
    threads: int
    rss_kib: int


def proc_sample(pid: int) -> ProcSample:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return ProcSample(fds, int(status["Threads"].strip()), int(status["VmRSS"].split()[0]))


def zombie_children(pid: int) -> list[int]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            zombies.append(int(entry.name))
    return zombies


def dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)
