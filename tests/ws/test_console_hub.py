"""The ConsoleHub with a stand-in for QEMU's serial chardev (a unix socket server), no guest needed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import auth
from tests.ws.conftest import TIMEOUT, WsClient, WsServer


class FakeSerial:
    """QEMU's side of the serial socket: records input, sends output, can hang up like an exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted = 0
        self.input = b""
        self.got_input = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._client, str(self.path))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        self.connected.set()
        while data := await reader.read(4096):
            self.input += data
            self.got_input.set()

    async def output(self, data: bytes) -> None:
        for writer in self._writers:
            writer.write(data)
            await writer.drain()

    async def hang_up(self) -> None:
        """As when the QEMU process ends: the connection and the listener go away."""
        self.connected.clear()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_input(self, needle: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            while needle not in self.input:
                self.got_input.clear()
                await self.got_input.wait()


@asynccontextmanager
async def fake_serial(server: WsServer, vm_id: str) -> AsyncIterator[FakeSerial]:
    serial = FakeSerial(server.container.driver.serial_socket(vm_id))
    await serial.start()
    try:
        yield serial
    finally:
        await serial.hang_up()


async def running(server: WsServer, token: str, name: str) -> str:
    vm_id = await server.create_vm(token, name)
    response = await server.http.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))
    assert response.status_code == 200, response.text
    return vm_id


async def output_until(ws: WsClient, needle: str) -> str:
    text = ""
    async with asyncio.timeout(TIMEOUT):
        while needle not in text:
            message = await ws.recv()
            if message["type"] == "terminal-output":
                text += message["data"]["output"]
    return text


async def test_one_guest_connection_is_shared_by_every_viewer(ws_fake: WsServer, admin: str) -> None:
    vm_id = await running(ws_fake, admin, "shared")
    async with fake_serial(ws_fake, vm_id) as serial:
        log = ws_fake.container.driver.console_log(vm_id)
        log.write_bytes(b"earlier output\r\n")
        async with ws_fake.events(admin) as one, ws_fake.events(admin) as two:
            for ws in (one, two):
                reply = await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
                assert reply["data"]["replayBytes"] == len(b"earlier output\r\n")
                replay = await ws.expect("terminal-output")
                assert replay["data"] == {"vmId": vm_id, "output": "earlier output\r\n", "replay": True}
            assert serial.accepted == 1
            await serial.output("héllo ✓\r\n".encode()[:3])  # split inside a character
            await serial.output("héllo ✓\r\n".encode()[3:])
            for ws in (one, two):
                assert "héllo ✓" in await output_until(ws, "✓")
            await one.send("terminal-input", {"vmId": vm_id, "input": "from one\n"})
            await two.send("terminal-input", {"vmId": vm_id, "input": "from two\n"})
            await serial.wait_input(b"from one\n")
            await serial.wait_input(b"from two\n")
        assert serial.accepted == 1


async def test_viewers_stay_attached_across_a_restart_and_get_what_they_missed(
    ws_fake: WsServer, admin: str
) -> None:
    vm_id = await running(ws_fake, admin, "restart")
    log = ws_fake.container.driver.console_log(vm_id)
    async with fake_serial(ws_fake, vm_id) as serial, ws_fake.events(admin) as ws:
        await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
        await serial.hang_up()  # QEMU ends...
        stop = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/stop", headers=auth(admin))
        assert stop.status_code == 200
        log.unlink(missing_ok=True)  # ...a new run starts a new log
        log.write_bytes(b"early boot line\r\n")
        await serial.start()
        start = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/start", headers=auth(admin))
        assert start.status_code == 200
        await asyncio.wait_for(serial.connected.wait(), TIMEOUT)  # the hub came back on `running`
        assert "early boot line" in await output_until(ws, "early boot line")
        await serial.output(b"second life\r\n")
        assert "second life" in await output_until(ws, "second life")


async def test_deleting_a_vm_closes_its_terminals(ws_fake: WsServer, admin: str) -> None:
    vm_id = await running(ws_fake, admin, "doomed")
    async with fake_serial(ws_fake, vm_id):
        ticket = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/console", json={}, headers=auth(admin))
        async with ws_fake.events(admin) as ws, connect(ticket.json()["data"]["url"]) as raw:
            await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
            deleted = await ws_fake.http.delete(f"/api/v1/vms/{vm_id}?force=true", headers=auth(admin))
            assert deleted.status_code == 200, deleted.text
            gone = await ws.expect("error")
            assert gone["data"]["code"] == "VM_NOT_FOUND" and gone["data"]["vmId"] == vm_id
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(TIMEOUT):
                    while True:
                        await raw.recv()
    assert raw.close_code == 1000 and raw.close_reason == "the VM was deleted"
    assert ws_fake.container.consoles.viewer_count(vm_id) == 0


async def test_raw_console_bytes_reach_the_guest_and_ws_viewers(ws_fake: WsServer, admin: str) -> None:
    vm_id = await running(ws_fake, admin, "mixed")
    async with fake_serial(ws_fake, vm_id) as serial, ws_fake.events(admin) as ws:
        await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
        ticket = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/console", json={}, headers=auth(admin))
        async with connect(ticket.json()["data"]["url"]) as raw:
            await raw.send(b"ls\r")
            await serial.wait_input(b"ls\r")
            await serial.output(b"\x1b[1mbin\x1b[0m\r\n")
            frame = await asyncio.wait_for(raw.recv(), TIMEOUT)
            assert frame == b"\x1b[1mbin\x1b[0m\r\n"
            assert "\x1b[1mbin" in await output_until(ws, "bin")
        try:
            await ws.request("ping", {}, "pong")
        except ConnectionClosed:  # pragma: no cover - the /ws socket must outlive the raw one
            raise AssertionError("closing the raw stream closed the /ws socket") from None
        assert serial.accepted == 1
