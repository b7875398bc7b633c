"""A real HTTP server (uvicorn in a thread, FakeDriver) for tests that need a network peer."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.conftest import _dummy_kernel, fake_driver_factory, make_settings
from voidvm_server.api.app import create_app
from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE


@dataclass
class HttpServer:
    base: str
    admin_token: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(make_settings(data_dir), driver_factory=fake_driver_factory)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the fuzz server did not start")
        time.sleep(0.05)
    container = app.state.container
    kernel, initrd = _dummy_kernel(data_dir)
    future = asyncio.run_coroutine_threadsafe(
        container.images.register_kernel_image("tiny", kernel, initrd, TINY_KERNEL_CMDLINE, default=True),
        _server_loop(server),
    )
    future.result(30)
    token = httpx.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": "admin123"}
    ).json()["token"]
    try:
        yield HttpServer(base, token)
    finally:
        server.should_exit = True
        thread.join(30)


def _server_loop(server: uvicorn.Server) -> asyncio.AbstractEventLoop:
    # uvicorn runs its own loop in the thread; the servers it started know it.
    for srv in server.servers:
        loop = srv.get_loop()
        return loop
    raise RuntimeError("uvicorn has no running server")
