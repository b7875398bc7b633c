"""Shared fixtures: settings, databases (SQLite and PostgreSQL), a running app, tokens.

`api` runs the real app in-process (httpx over ASGI) with the FakeDriver; `qemu_api` runs it with
the real QEMU driver and the tiny guest image, for integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from voidvm_server.api.app import DriverFactory, create_app
from voidvm_server.api.container import Container
from voidvm_server.config import Settings
from voidvm_server.drivers.fake import FakeDriver
from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE, build_tiny_image
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import ImageRepository

IN_CI = os.environ.get("CI") == "true"
PG_ADMIN_URL = os.environ.get("VOIDVM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Software emulation is slow: every wait on a guest scales with this.
TCG_SCALE = float(os.environ.get("VOIDVM_TEST_TIMEOUT_SCALE", "1"))


def _pg_available() -> bool:
    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def postgres_ready() -> bool:
    ok = _pg_available()
    if not ok and IN_CI:
        pytest.fail("PostgreSQL must be reachable in CI (run 'make test', which starts it)")
    return ok


@asynccontextmanager
async def _postgres_database() -> AsyncIterator[str]:
    import asyncpg

    name = f"voidvm_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_ready: bool
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'voidvm.db'}"
        return
    if not postgres_ready:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (run 'make test' to start it)")
    async with _postgres_database() as url:
        yield url


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "image_downloads": False,
        "image_url_imports": False,  # tests never reach beyond this machine
        "accel": "tcg",
        "rate_limit": "100000/minute",
        "login_attempts_per_minute": 1000,
        "jwt_secret": "test-secret-" + "x" * 32,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Api:
    """A running app and a client for it, with helpers for the common calls."""

    client: httpx.AsyncClient
    container: Container
    app: Any = None  # the ASGI app behind `client`, for clients of other addresses (`from_address`)

    @asynccontextmanager
    async def from_address(self, address: str) -> AsyncIterator[httpx.AsyncClient]:
        """A client of the same app whose requests come from `address`."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=120) as client:
            yield client

    async def login(self, username: str = "admin", password: str = "admin123") -> str:
        response = await self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    async def create_user(
        self, admin_token: str, username: str, password: str = "password-123", **extra: Any
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/api/v1/users",
            json={"username": username, "password": password, **extra},
            headers=auth(admin_token),
        )
        assert response.status_code == 201, response.text
        user: dict[str, Any] = response.json()["data"]
        return user


class ConsoleViewer:
    """A ConsoleHub viewer that keeps everything it is shown."""

    def __init__(self) -> None:
        self.seen = b""

    def on_output(self, data: bytes) -> None:
        self.seen += data

    def on_closed(self, code: str, reason: str) -> None:
        pass


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fake_driver_factory(settings: Settings, data_dir: Path) -> FakeDriver:
    return FakeDriver(data_dir)


@asynccontextmanager
async def running_api(
    settings: Settings, driver_factory: DriverFactory | None, tiny: tuple[Path, Path] | None
) -> AsyncIterator[Api]:
    app = create_app(settings, driver_factory=driver_factory)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60) as manager:
        container: Container = app.state.container
        kernel, initrd = tiny if tiny else _dummy_kernel(settings.data_dir)
        await container.images.register_kernel_image(
            "tiny", kernel, initrd, TINY_KERNEL_CMDLINE, default=True
        )
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=120) as client:
            yield Api(client, container, manager.app)


async def let_tiny_serve_ssh(db: Database) -> None:
    """Count the tiny guest as an SSH server (its image says it serves none), for tests of the SSH
    forward itself: they listen on the guest's port 22 with `nc`."""
    async with db.session() as s:
        repo = ImageRepository(s)
        tiny = await repo.by_name("tiny")
        assert tiny is not None, "register the tiny image first"
        await repo.update(tiny.id, serves_ssh=True)


def _dummy_kernel(data_dir: Path) -> tuple[Path, Path]:
    kernel, initrd = data_dir / "fake-vmlinuz", data_dir / "fake-initrd"
    kernel.write_bytes(b"not a kernel: the FakeDriver never boots it")
    initrd.write_bytes(b"")
    return kernel, initrd


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(make_settings(tmp_path), fake_driver_factory, None) as running:
        yield running


@pytest.fixture
async def admin_token(api: Api) -> str:
    return await api.login()


# -- real QEMU ---------------------------------------------------------------------------------
def qemu_missing_reason() -> str | None:
    if shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None:
        return "qemu-system-x86_64/qemu-img are not installed (make test installs them as root)"
    if not list(Path("/boot").glob("vmlinuz-*")):
        return "no host kernel in /boot (install linux-image-cloud-amd64)"
    return None


def require_qemu() -> None:
    """Skip the test without QEMU and a host kernel (fail it in CI, which installs them)."""
    reason = qemu_missing_reason()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


class FakeClock:
    """A clock the test moves by hand (`now` seconds)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    reason = qemu_missing_reason()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    files = build_tiny_image(tmp_path_factory.mktemp("tiny"))
    yield files.kernel, files.initrd


@pytest.fixture
async def qemu_api(tmp_path: Path, tiny_image: tuple[Path, Path]) -> AsyncIterator[Api]:
    settings = make_settings(tmp_path, stop_timeout_seconds=30 * TCG_SCALE)
    async with running_api(settings, None, tiny_image) as running:
        try:
            yield running
        finally:
            await kill_all_vms(running.container)


async def kill_all_vms(container: Container) -> None:
    """Tests never leak QEMU processes, whatever happened in them."""
    for vm_id in container.agent.driver.known_run_dirs():
        if container.agent.driver.is_running(vm_id):
            await container.agent.driver.kill(vm_id)


@pytest.fixture
async def api_any_db(tmp_path: Path, database_url: str) -> AsyncIterator[Api]:
    """The app on SQLite and on PostgreSQL (the test runs once for each)."""
    settings = make_settings(tmp_path, database_url=database_url)
    async with running_api(settings, fake_driver_factory, None) as running:
        yield running


async def serial_command(socket_path: Path, command: str, timeout: float = 30 * TCG_SCALE) -> str:
    """Type `command` into a guest's shell straight through its serial socket (no server) and
    return its output; the markers are computed by the shell so the echo never matches them."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    token = f"{os.getpid() % 1000}{time.monotonic_ns() % 100000}"
    start, end = f"<<{int(token) + 1}>>", f"<<{int(token) + 2}>>"
    buffer = b""
    try:
        writer.write(f"\necho '<<'$(({token}+1))'>>'; {command}; echo '<<'$(({token}+2))'>>'\n".encode())
        await writer.drain()
        async with asyncio.timeout(timeout):
            while end.encode() not in buffer:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                buffer += chunk
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    text = buffer.decode(errors="replace").replace("\r", "")
    assert start in text and end in text, f"no answer to {command!r}: {text[-500:]!r}"
    return text.split(start, 1)[1].split(end, 1)[0].strip()
