"""WebSocket test fixtures: the app served by a real uvicorn on 127.0.0.1, and a JSON client.

`ws_fake` serves the app with the FakeDriver (fast); `ws_qemu` with real QEMU and the tiny guest.
Both stop every QEMU process they started, whatever happened in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import TCG_SCALE, auth, fake_driver_factory, kill_all_vms, make_settings
from voidvm_server.api.app import DriverFactory, create_app
from voidvm_server.api.container import Container
from voidvm_server.api.serving import serving_config
from voidvm_server.config import Settings
from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE

Message = dict[str, Any]
TIMEOUT = 10.0  # for anything that needs no guest
BOOT_TIMEOUT = 60 * TCG_SCALE
TINY_VM = {"cpu": 1, "memory": 256, "disk": 1}


class WsClient:
    """A /ws connection speaking the VoidVM envelope; `expect` skips messages it does not want."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.seen: list[Message] = []
        self._ids = 0

    async def send(self, type: str, data: dict[str, Any] | None = None, id: str | None = None) -> str:
        self._ids += 1
        message_id = id or f"t{self._ids}"
        await self.connection.send(json.dumps({"type": type, "data": data or {}, "id": message_id}))
        return message_id

    async def recv(self, timeout: float = TIMEOUT) -> Message:
        async with asyncio.timeout(timeout):
            raw = await self.connection.recv()
        message: Message = json.loads(raw)
        self.seen.append(message)
        return message

    async def expect(
        self,
        type: str,
        where: Callable[[Message], bool] = lambda m: True,
        timeout: float = TIMEOUT,
        *,
        or_error: bool = False,
    ) -> Message:
        """The next message of `type` matching `where` (or, with `or_error`, a matching `error`)."""
        types = {type, "error"} if or_error else {type}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self.recv(timeout)
                    if message["type"] in types and where(message):
                        return message
        except TimeoutError:
            pytest.fail(f"no {type!r} message within {timeout:g}s; last seen: {self.seen[-5:]}")

    async def request(self, type: str, data: dict[str, Any], reply: str, timeout: float = TIMEOUT) -> Message:
        """Send and wait for the reply of type `reply` (or an `error`) echoing the id."""
        message_id = await self.send(type, data)
        return await self.expect(reply, lambda m: m.get("id") == message_id, timeout=timeout, or_error=True)

    async def closed(self, timeout: float = TIMEOUT) -> tuple[int | None, str]:
        """Wait for the server to close the socket; (code, reason)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self.seen.append(json.loads(await self.connection.recv()))
        except ConnectionClosed as exc:
            frame = exc.rcvd
            return (frame.code, frame.reason) if frame else (None, "")
        raise AssertionError("unreachable")


@dataclass
class WsServer:
    container: Container
    http: httpx.AsyncClient
    port: int
    server: uvicorn.Server

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def login(self, username: str = "admin", password: str = "admin123") -> str:
        response = await self.http.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    async def create_user(self, admin_token: str, username: str, password: str = "password-123") -> str:
        response = await self.http.post(
            "/api/v1/users", json={"username": username, "password": password}, headers=auth(admin_token)
        )
        assert response.status_code == 201, response.text
        return await self.login(username, password)

    async def create_vm(self, token: str, name: str) -> str:
        response = await self.http.post("/api/v1/vms", json={"name": name, **TINY_VM}, headers=auth(token))
        assert response.status_code == 201, response.text
        vm_id: str = response.json()["data"]["id"]
        return vm_id

    @asynccontextmanager
    async def socket(self, path: str = "/ws", **kwargs: Any) -> AsyncIterator[WsClient]:
        async with connect(self.ws_base + path, open_timeout=TIMEOUT, max_size=None, **kwargs) as conn:
            yield WsClient(conn)

    @asynccontextmanager
    async def events(self, token: str, query: str = "") -> AsyncIterator[WsClient]:
        async with self.socket(f"/ws?token={token}{query}") as client:
            yield client


@asynccontextmanager
async def serve(
    settings: Settings, driver_factory: DriverFactory | None, tiny: tuple[Path, Path] | None
) -> AsyncIterator[WsServer]:
    app = create_app(settings, driver_factory=driver_factory)
    config = serving_config(app, settings, host="127.0.0.1", port=0)  # as `voidvm-server serve` runs it
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(120):
            while not server.started:  # uvicorn offers a flag, not an event
                if task.done():
                    task.result()
                    pytest.fail("uvicorn stopped during start-up")
                await asyncio.sleep(0.02)
        container: Container = app.state.container
        kernel, initrd = tiny if tiny else _fake_kernel(settings.data_dir)
        await container.images.register_kernel_image(
            "tiny", kernel, initrd, TINY_KERNEL_CMDLINE, default=True
        )
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            try:
                yield WsServer(container, http, port, server)
            finally:
                await kill_all_vms(container)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _fake_kernel(data_dir: Path) -> tuple[Path, Path]:
    kernel, initrd = data_dir / "fake-vmlinuz", data_dir / "fake-initrd"
    kernel.write_bytes(b"never booted: the FakeDriver only pretends")
    initrd.write_bytes(b"")
    return kernel, initrd


def ws_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"ws_revalidate_seconds": 0.5, "stop_timeout_seconds": 30 * TCG_SCALE}
    values.update(overrides)
    return make_settings(tmp_path, **values)


@pytest.fixture
async def ws_fake(tmp_path: Path) -> AsyncIterator[WsServer]:
    async with serve(ws_settings(tmp_path), fake_driver_factory, None) as server:
        yield server


@pytest.fixture
async def ws_qemu(tmp_path: Path, tiny_image: tuple[Path, Path]) -> AsyncIterator[WsServer]:
    async with serve(ws_settings(tmp_path), None, tiny_image) as server:
        yield server


@pytest.fixture
async def admin(ws_fake: WsServer) -> str:
    return await ws_fake.login()
