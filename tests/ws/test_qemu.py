"""/ws and the raw streams against real QEMU guests (the tiny image, tcg-friendly timeouts)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import auth
from tests.ws.conftest import BOOT_TIMEOUT, TIMEOUT, WsClient, WsServer

pytestmark = pytest.mark.qemu
READY_LINE = "VoidVM tiny guest ready"
SHELL_TIMEOUT = BOOT_TIMEOUT / 2


class Terminal:
    """The `terminal-output` text one /ws socket receives for one VM."""

    def __init__(self, ws: WsClient, vm_id: str) -> None:
        self.ws = ws
        self.vm_id = vm_id
        self.text = ""

    async def until(self, needle: str, timeout: float) -> str:
        async with asyncio.timeout(timeout):
            while needle not in self.text:
                message = await self.ws.recv(timeout)
                if message["type"] == "terminal-output" and message["data"]["vmId"] == self.vm_id:
                    assert isinstance(message["data"]["output"], str)
                    self.text += message["data"]["output"]
        return self.text


async def start_vm(server: WsServer, token: str, name: str) -> str:
    vm_id = await server.create_vm(token, name)
    response = await server.http.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))
    assert response.status_code == 200, response.text
    return vm_id


async def attach(ws: WsClient, vm_id: str) -> Terminal:
    reply = await ws.request("terminal-connect", {"vmId": vm_id, "type": "serial"}, "terminal-connected")
    assert reply["type"] == "terminal-connected", reply
    return Terminal(ws, vm_id)


async def test_vm_control_start_streams_starting_then_running_from_real_qemu(ws_qemu: WsServer) -> None:
    token = await ws_qemu.login()
    vm_id = await ws_qemu.create_vm(token, "ws-start")
    async with ws_qemu.events(token) as ws:
        await ws.request("subscribe", {"topic": "vm-status", "vmId": vm_id}, "subscribed")
        reply = await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        assert reply["type"] == "vm-control-response" and reply["data"]["status"] == "starting"
        await ws.expect(
            "vm-status", lambda m: m["data"]["status"] in ("running", "error"), timeout=BOOT_TIMEOUT
        )
        events = [m["data"] for m in ws.seen if m["type"] == "vm-status"]
        assert [e["status"] for e in events] == ["starting", "running"], events
        assert ws_qemu.container.agent.driver.is_running(vm_id)
        again = await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        assert again["data"]["code"] == "VM_ALREADY_RUNNING"


async def test_serial_terminal_echoes_to_every_viewer_and_detaching_leaves_the_vm_running(
    ws_qemu: WsServer,
) -> None:
    token = await ws_qemu.login()
    vm_id = await start_vm(ws_qemu, token, "ws-console")
    consoles = ws_qemu.container.consoles
    async with ws_qemu.events(token) as one_ws, ws_qemu.events(token) as two_ws:
        one = await attach(one_ws, vm_id)
        await one.until(READY_LINE, BOOT_TIMEOUT)
        two = await attach(two_ws, vm_id)
        assert consoles.viewer_count(vm_id) == 2

        # The shell computes the marker, so the echoed command line itself never matches.
        await one_ws.send("terminal-input", {"vmId": vm_id, "input": "\necho ws-$((6*7))-marker\n"})
        await one.until("ws-42-marker", SHELL_TIMEOUT)
        await two.until("ws-42-marker", SHELL_TIMEOUT)

        resize = await one_ws.send("terminal-resize", {"vmId": vm_id, "cols": 120, "rows": 40})
        bye = await one_ws.request("terminal-disconnect", {"vmId": vm_id}, "terminal-disconnected")
        assert bye["data"] == {"vmId": vm_id}
        assert not [m for m in one_ws.seen if m.get("id") == resize]  # a resize has no reply
        assert consoles.viewer_count(vm_id) == 1

        await two_ws.send("terminal-input", {"vmId": vm_id, "input": "echo ws-$((7*7))-second\n"})
        await two.until("ws-49-second", SHELL_TIMEOUT)
        detached = await one_ws.request("terminal-input", {"vmId": vm_id, "input": "x"}, "none")
        assert detached["data"]["code"] == "TERMINAL_NOT_CONNECTED"

        # A viewer that attaches now first gets the recent output.
        async with ws_qemu.events(token) as late_ws:
            await late_ws.send("terminal-connect", {"vmId": vm_id})
            replay = await late_ws.expect("terminal-output", timeout=TIMEOUT)
            assert replay["data"]["replay"] is True and "ws-49-second" in replay["data"]["output"]
    # With no viewer left the VM runs on, and its console is still recorded.
    await _until(lambda: consoles.viewer_count(vm_id) == 0)
    vm = (await ws_qemu.http.get(f"/api/v1/vms/{vm_id}", headers=auth(token))).json()["data"]
    assert vm["status"] == "running" and ws_qemu.container.agent.driver.is_running(vm_id)
    await ws_qemu.container.agent.driver.console_write(vm_id, b"echo unwatched-$((6*7))\n")
    log = ws_qemu.container.agent.driver.console_log(vm_id)
    await _until(lambda: b"unwatched-42" in log.read_bytes(), SHELL_TIMEOUT)


async def _until(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


async def _read_raw(conn: ClientConnection, needle: bytes, timeout: float) -> bytes:
    buffer = b""
    async with asyncio.timeout(timeout):
        while needle not in buffer:
            frame = await conn.recv()
            assert isinstance(frame, bytes)
            buffer += frame
    return buffer


async def test_raw_console_stream_with_a_ticket_carries_serial_bytes_and_the_ticket_is_single_use(
    ws_qemu: WsServer,
) -> None:
    token = await ws_qemu.login()
    vm_id = await start_vm(ws_qemu, token, "ws-raw")
    response = await ws_qemu.http.post(
        f"/api/v1/vms/{vm_id}/console", json={"type": "serial"}, headers=auth(token)
    )
    url = response.json()["data"]["url"]
    async with connect(url, open_timeout=TIMEOUT, max_size=None) as conn:
        await _read_raw(conn, READY_LINE.encode(), BOOT_TIMEOUT)
        await conn.send("\necho raw-$((20+3))-ok\n")  # xterm.js's attach addon sends text frames
        await _read_raw(conn, b"raw-23-ok", SHELL_TIMEOUT)
    async with connect(url, open_timeout=TIMEOUT) as reused:
        with pytest.raises(ConnectionClosed) as closed:
            await reused.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


class RfbReader:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.buffer = b""

    async def read(self, n: int) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            while len(self.buffer) < n:
                frame = await self.conn.recv()
                assert isinstance(frame, bytes)
                self.buffer += frame
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


@pytest.mark.parametrize("credential", ["ticket", "token"])
async def test_vnc_stream_proxies_a_real_rfb_handshake(ws_qemu: WsServer, credential: str) -> None:
    token = await ws_qemu.login()
    vm_id = await start_vm(ws_qemu, token, "ws-vnc")
    if credential == "ticket":
        response = await ws_qemu.http.post(
            f"/api/v1/vms/{vm_id}/console", json={"type": "vnc"}, headers=auth(token)
        )
        url, headers = response.json()["data"]["url"], {}
    else:
        url, headers = f"{ws_qemu.ws_base}/api/v1/vms/{vm_id}/vnc", auth(token)
    async with connect(
        url, open_timeout=TIMEOUT, additional_headers=headers, subprotocols=["binary"]
    ) as conn:
        assert conn.subprotocol == "binary"  # what noVNC asks for
        rfb = RfbReader(conn)
        assert await rfb.read(12) == b"RFB 003.008\n"
        await conn.send(b"RFB 003.008\n")
        count = (await rfb.read(1))[0]
        assert count > 0
        assert 1 in await rfb.read(count)  # security type None
        await conn.send(b"\x01")
        assert struct.unpack(">I", await rfb.read(4))[0] == 0  # SecurityResult: OK
        await conn.send(b"\x01")  # ClientInit, shared
        width, height = struct.unpack(">HH", await rfb.read(4))
        assert width > 0 and height > 0
        await rfb.read(16)  # pixel format
        (name_length,) = struct.unpack(">I", await rfb.read(4))
        name = await rfb.read(name_length)
        assert name == f"QEMU ({vm_id})".encode()  # QEMU names the desktop after -name guest=<id>
