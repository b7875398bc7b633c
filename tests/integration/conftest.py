"""Helpers for the real-QEMU integration tests: polling, the guest's serial console, /proc scans.

Every wait on a guest polls a condition against a deadline scaled by TCG_SCALE; nothing sleeps for
a fixed time hoping the guest got there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests.conftest import TCG_SCALE, Api, auth, make_settings
from voidvm_server.api.app import create_app
from voidvm_server.api.container import Container
from voidvm_server.config import Settings
from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE

T = TypeVar("T")

BOOT_TIMEOUT = 60 * TCG_SCALE
STOP_TIMEOUT = 30 * TCG_SCALE
READY_LINE = "VoidVM tiny guest ready"
BOOTING_LINE = "VoidVM tiny guest booting"
# Small enough to be quick under tcg, big enough for the cloud kernel and its initramfs.
TINY_VM = {"cpu": 1, "memory": 256, "disk": 1}


async def poll(
    check: Callable[[], Awaitable[T | None]], *, timeout: float, interval: float = 0.1, what: str = ""
) -> T:
    """Call `check` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or check!r} (last: {last!r})")
        await asyncio.sleep(interval)


async def create_vm(api: Api, token: str, name: str, **body: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/api/v1/vms", json={"name": name, **TINY_VM, **body}, headers=auth(token)
    )
    assert response.status_code == 201, response.text
    vm: dict[str, Any] = response.json()["data"]
    return vm


async def get_vm(api: Api, token: str, vm_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    vm: dict[str, Any] = response.json()["data"]
    return vm


async def action(
    api: Api, token: str, vm_id: str, name: str, expect: int = 200, **body: Any
) -> dict[str, Any]:
    response = await api.client.post(f"/api/v1/vms/{vm_id}/{name}", json=body, headers=auth(token))
    assert response.status_code == expect, f"{name}: {response.status_code} {response.text}"
    payload: dict[str, Any] = response.json()
    return payload


async def console_log(api: Api, token: str, vm_id: str) -> str:
    response = await api.client.get(
        f"/api/v1/vms/{vm_id}/console/log", params={"tail": 1024 * 1024}, headers=auth(token)
    )
    assert response.status_code == 200, response.text
    log: str = response.json()["data"]["log"]
    return log


async def wait_console(api: Api, token: str, vm_id: str, text: str, timeout: float = BOOT_TIMEOUT) -> str:
    async def seen() -> str | None:
        log = await console_log(api, token, vm_id)
        return log if text in log else None

    return await poll(seen, timeout=timeout, interval=0.2, what=f"{text!r} on {vm_id}'s console")


async def wait_status(
    api: Api, token: str, vm_id: str, status: str, timeout: float = 10 * TCG_SCALE
) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        vm = await get_vm(api, token, vm_id)
        return vm if vm["status"] == status else None

    return await poll(reached, timeout=timeout, what=f"{vm_id} to become {status}")


class ConsoleTap:
    """A viewer of the app's ConsoleHub: collects the guest's output from the moment it attaches.
    (While the server runs, it holds the guest's one serial connection: tests go through it.)"""

    def __init__(self) -> None:
        self.output = bytearray()
        self._changed = asyncio.Event()

    def on_output(self, data: bytes) -> None:
        self.output += data
        self._changed.set()

    def on_closed(self, code: str, reason: str) -> None:
        self._changed.set()

    async def until(self, needle: bytes, timeout: float) -> str:
        try:
            async with asyncio.timeout(timeout):
                while needle not in self.output:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"{needle!r} not seen within {timeout:g}s: {bytes(self.output[-500:])!r}")
        return self.output.decode(errors="replace")


@asynccontextmanager
async def console_tap(api: Api, vm_id: str) -> AsyncIterator[ConsoleTap]:
    tap = ConsoleTap()
    await api.container.consoles.attach(vm_id, tap)
    try:
        yield tap
    finally:
        await api.container.consoles.detach(vm_id, tap)


async def serial_run(api: Api, vm_id: str, command: str, timeout: float = 30 * TCG_SCALE) -> str:
    """Type `command` into the guest's root shell and return its output (between two markers the
    shell computes, so the echoed command line never matches them)."""
    token = f"{os.getpid() % 1000}{time.monotonic_ns() % 100000}"
    start, end = f"<<{int(token) + 1}>>", f"<<{int(token) + 2}>>"
    line = f"\necho '<<'$(({token}+1))'>>'; {command}; echo '<<'$(({token}+2))'>>'\n"
    async with console_tap(api, vm_id) as tap:
        await api.container.consoles.write(vm_id, line.encode())
        text = (await tap.until(end.encode(), timeout)).replace("\r", "")
    return text.split(start, 1)[1].split(end, 1)[0].strip()


async def serial_send(api: Api, vm_id: str, text: str, expect: str, timeout: float = 30 * TCG_SCALE) -> str:
    """Type `text` into the guest and wait until `expect` shows up in its output."""
    async with console_tap(api, vm_id) as tap:
        await api.container.consoles.write(vm_id, text.encode())
        return await tap.until(expect.encode(), timeout)


def _pids(marker: str, is_program: Callable[[str], bool]) -> list[int]:
    """Pids of live processes whose program name passes `is_program` and whose command line
    mentions `marker` (a VM id, a directory)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or not argv or not is_program(Path(argv[0].decode(errors="replace")).name):
            continue
        if any(marker.encode() in arg for arg in argv):
            pids.append(int(entry.name))
    return pids


def qemu_pids(marker: str) -> list[int]:
    return _pids(marker, lambda name: "qemu-system" in name)


def kill_qemus(marker: str) -> None:
    for pid in qemu_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def passt_pids(marker: str) -> list[int]:
    """Pids of live passt processes (guest networks) whose command line mentions `marker`."""
    return _pids(marker, lambda name: "passt" in name)


async def wait_gone(pid: int, timeout: float = 10) -> None:
    async def gone() -> bool:
        return not Path(f"/proc/{pid}").exists() or _zombie(pid)

    await poll(gone, timeout=timeout, what=f"process {pid} to exit")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(autouse=True)
def no_qemu_left_behind(tmp_path: Path) -> Iterator[None]:
    """After every test (and its fixtures' own clean-up): no QEMU of its data dir may be alive,
    nor a passt of it once its QEMU is gone (passt quits within moments of its QEMU)."""
    yield
    leftover = qemu_pids(str(tmp_path))
    kill_qemus(str(tmp_path))
    deadline = time.monotonic() + 5
    while passt_pids(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    stray = passt_pids(str(tmp_path))
    for pid in stray:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leftover, f"QEMU processes left behind: {leftover}"
    assert not stray, f"passt processes left behind: {stray}"


@pytest.fixture
async def qemu_token(qemu_api: Api) -> str:
    return await qemu_api.login()


@asynccontextmanager
async def serve(settings: Settings, tiny: tuple[Path, Path] | None) -> AsyncIterator[Api]:
    """Like tests.conftest.running_api with the real driver, but registers the tiny image only
    when `tiny` is given (a restarted server finds it in its database) and never kills VMs."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60) as manager:
        container: Container = app.state.container
        if tiny is not None:
            await container.images.register_kernel_image(
                "tiny", tiny[0], tiny[1], TINY_KERNEL_CMDLINE, default=True
            )
        transport = httpx.ASGITransport(app=manager.app)
        base = "http://localhost"
        async with httpx.AsyncClient(transport=transport, base_url=base, timeout=120) as client:
            yield Api(client, container)


AppFactory = Callable[[], contextlib.AbstractAsyncContextManager[Api]]


@pytest.fixture
def restartable_qemu(tmp_path: Path, tiny_image: tuple[Path, Path]) -> Iterator[AppFactory]:
    """Start the app (real QEMU) on one data dir as often as a test likes.

    Leaving one app does NOT stop its VMs (as when the real server stops); the fixture kills every
    QEMU of the data dir at the end of the test, whatever happened.
    """
    settings = make_settings(tmp_path, stop_timeout_seconds=STOP_TIMEOUT)
    started = False

    def app() -> contextlib.AbstractAsyncContextManager[Api]:
        nonlocal started
        first, started = not started, True
        return serve(settings, tiny_image if first else None)

    try:
        yield app
    finally:
        kill_qemus(str(tmp_path))
