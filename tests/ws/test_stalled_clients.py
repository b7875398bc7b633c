"""Clients that stop reading: the server cuts them off (RST, no close frame) and serves the others.

Each stalled client is a real TCP client with a tiny receive buffer that stops reading after the
first message, so the server's socket buffers really fill and its sends really block.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from tests.conftest import fake_driver_factory
from tests.ws.conftest import TIMEOUT, WsServer, serve, ws_settings
from tests.ws.test_console_hub import fake, output_until, running

SEND_TIMEOUT = 1.0
CHUNK = 64 * 1024
STALL_WAIT = 60.0  # generous: the server fills its buffers, then waits out the deadline


@asynccontextmanager
async def stalled(server: WsServer, path: str) -> AsyncIterator[ClientConnection]:
    """A client that stops reading after the first message (until the test calls `recv`)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    async with connect(  # uncompressed, so that what the server sends fills the buffers
        server.ws_base + path, sock=sock, compression=None, max_queue=1, ping_interval=None,
        max_size=None, open_timeout=TIMEOUT, close_timeout=1,
    ) as connection:  # fmt: skip
        yield connection


def held_by_uvicorn(server: WsServer, client: ClientConnection) -> bool:
    address = tuple(client.local_address[:2])
    return any(c.client == address for c in server.server.server_state.connections)


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll server-side state that offers no event to await."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def reads_to_the_end(client: ClientConnection) -> ConnectionClosed:
    """What the stalled client finds once it reads again: its buffered data, then the end."""
    async with asyncio.timeout(TIMEOUT):
        try:
            while True:
                await client.recv()
        except ConnectionClosed as exc:
            return exc


def assert_aborted(end: ConnectionClosed) -> None:
    assert isinstance(end, ConnectionClosedError)
    assert end.rcvd is None  # no close frame: the connection was aborted, not closed


@pytest.fixture
async def ws_stall(tmp_path: Path) -> AsyncIterator[WsServer]:
    settings = ws_settings(tmp_path, ws_send_timeout_seconds=SEND_TIMEOUT)
    async with serve(settings, fake_driver_factory, None) as server:
        yield server


@pytest.mark.parametrize("endpoint", ["/ws terminal", "raw console"])
async def test_a_console_viewer_that_stops_reading_is_cut_off(ws_stall: WsServer, endpoint: str) -> None:
    admin = await ws_stall.login()
    hub, consoles = ws_stall.container.ws_hub, ws_stall.container.consoles
    vm_id = await running(ws_stall, admin, "chatty")
    events = endpoint == "/ws terminal"
    path = f"/ws?token={admin}" if events else f"/api/v1/vms/{vm_id}/console?token={admin}"
    guest = fake(ws_stall)
    async with ws_stall.events(admin) as witness:
        await witness.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
        async with stalled(ws_stall, path) as sink:
            if events:
                await sink.send(json.dumps({"type": "terminal-connect", "data": {"vmId": vm_id}}))
            await until(lambda: consoles.viewer_count(vm_id) == 2)
            assert hub.total == 2
            # Guest output in lockstep with the witness, until the server has dropped the stalled client.
            async with asyncio.timeout(STALL_WAIT):
                n = 0
                while held_by_uvicorn(ws_stall, sink):
                    n += 1
                    guest.guest_prints(vm_id, b"x" * (CHUNK - 16) + b"<%d>\r\n" % n)
                    await output_until(witness, f"<{n}>")
            await until(lambda: hub.total == 1 and consoles.viewer_count(vm_id) == 1)
            guest.guest_prints(vm_id, b"after the drop\r\n")
            assert "after the drop" in await output_until(witness, "after the drop")
            assert (await witness.request("ping", {}, "pong"))["type"] == "pong"
            assert_aborted(await reads_to_the_end(sink))


@asynccontextmanager
async def fake_vnc(server: WsServer, vm_id: str) -> AsyncIterator[None]:
    """QEMU's VNC socket, as far as the proxy can tell: echoes input; `flood` starts an endless stream."""
    writers: list[asyncio.StreamWriter] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while data := await reader.read(4096):
                while data == b"flood":  # until the proxy hangs up
                    writer.write(b"v" * CHUNK)
                    await writer.drain()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass

    path = server.container.agent.driver.vnc_socket(vm_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = await asyncio.start_unix_server(client, str(path))
    try:
        yield
    finally:
        listener.close()
        for writer in writers:
            writer.close()


async def test_a_vnc_client_that_stops_reading_is_cut_off(ws_stall: WsServer) -> None:
    admin = await ws_stall.login()
    hub = ws_stall.container.ws_hub
    vm_id = await running(ws_stall, admin, "display")
    path = f"/api/v1/vms/{vm_id}/vnc?token={admin}"
    async with (
        fake_vnc(ws_stall, vm_id),
        connect(ws_stall.ws_base + path, open_timeout=TIMEOUT) as witness,
        stalled(ws_stall, path) as sink,
    ):
        await sink.send(b"flood")
        await until(lambda: not held_by_uvicorn(ws_stall, sink), STALL_WAIT)
        await until(lambda: hub.total == 1)
        await witness.send(b"still there?")
        assert await asyncio.wait_for(witness.recv(), TIMEOUT) == b"still there?"
        assert_aborted(await reads_to_the_end(sink))


async def test_a_missed_keepalive_ping_aborts_even_while_a_send_is_blocked(tmp_path: Path) -> None:
    # The send deadline is far away: what cuts the client off here is uvicorn's ping timeout, whose
    # own close would wait for the full buffer to drain.
    settings = ws_settings(tmp_path, ws_send_timeout_seconds=600, ws_ping_interval_seconds=0.5)
    async with serve(settings, fake_driver_factory, None) as server:
        admin = await server.login()
        vm_id = await running(server, admin, "pings")
        async with fake_vnc(server, vm_id), stalled(server, f"/api/v1/vms/{vm_id}/vnc?token={admin}") as sink:
            await sink.send(b"flood")
            await until(lambda: not held_by_uvicorn(server, sink), STALL_WAIT)
            await until(lambda: server.container.ws_hub.total == 0)
            assert_aborted(await reads_to_the_end(sink))
