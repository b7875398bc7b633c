"""The ConsoleHub over the FakeDriver, whose `guest_prints` stands in for a guest's serial output
(the real recorder, QEMU's side of it, is tested in tests/unit/test_serial_recorder.py and
tests/integration/test_console_flood.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import auth
from tests.ws.conftest import TIMEOUT, WsClient, WsServer
from voidvm_server.drivers.console_log import previous_run_log
from voidvm_server.drivers.fake import FakeDriver


def fake(server: WsServer) -> FakeDriver:
    driver = server.container.agent.driver
    assert isinstance(driver, FakeDriver)
    return driver


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


async def eventually(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


async def input_until(driver: FakeDriver, vm_id: str, needle: bytes) -> None:
    await eventually(lambda: needle in driver.console_input.get(vm_id, b""))


async def test_every_viewer_gets_the_recent_output_then_live_output_and_sends_input(
    ws_fake: WsServer, admin: str
) -> None:
    vm_id = await running(ws_fake, admin, "shared")
    driver = fake(ws_fake)
    driver.guest_prints(vm_id, b"earlier output\r\n")
    async with ws_fake.events(admin) as one, ws_fake.events(admin) as two:
        for ws in (one, two):
            reply = await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
            assert reply["data"]["replayBytes"] == len(b"earlier output\r\n")
            replay = await ws.expect("terminal-output")
            assert replay["data"] == {"vmId": vm_id, "output": "earlier output\r\n", "replay": True}
        assert ws_fake.container.consoles.viewer_count(vm_id) == 2
        driver.guest_prints(vm_id, "héllo ✓\r\n".encode()[:3])  # split inside a character
        driver.guest_prints(vm_id, "héllo ✓\r\n".encode()[3:])
        for ws in (one, two):
            assert "héllo ✓" in await output_until(ws, "✓")
        await one.send("terminal-input", {"vmId": vm_id, "input": "from one\n"})
        await two.send("terminal-input", {"vmId": vm_id, "input": "from two\n"})
        await input_until(driver, vm_id, b"from one\n")
        await input_until(driver, vm_id, b"from two\n")
    # The server sees the sockets close a moment later.
    await eventually(lambda: ws_fake.container.consoles.viewer_count(vm_id) == 0)


async def test_the_replay_is_bounded_to_the_most_recent_output(ws_fake: WsServer, admin: str) -> None:
    vm_id = await running(ws_fake, admin, "bounded")
    driver = fake(ws_fake)
    limit = driver.console_limits.replay_bytes
    driver.guest_prints(vm_id, b"x" * (3 * limit) + b"<the end>")
    async with ws_fake.events(admin) as ws:
        reply = await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
        assert reply["data"]["replayBytes"] == limit
        replay = await ws.expect("terminal-output")
        assert replay["data"]["output"].endswith("<the end>") and len(replay["data"]["output"]) == limit


async def test_viewers_stay_attached_across_a_restart_and_see_the_new_run_from_its_start(
    ws_fake: WsServer, admin: str
) -> None:
    vm_id = await running(ws_fake, admin, "restart")
    driver = fake(ws_fake)
    async with ws_fake.events(admin) as ws:
        await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
        driver.guest_prints(vm_id, b"first life\r\n")
        assert "first life" in await output_until(ws, "first life")
        stop = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/stop", headers=auth(admin))
        assert stop.status_code == 200, stop.text
        start = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/start", headers=auth(admin))
        assert start.status_code == 200, start.text
        driver.guest_prints(vm_id, b"early boot line\r\n")
        text = await output_until(ws, "early boot line")
        assert "first life" not in text  # the new run, not a replay of the old one
        # The saved output is the new run's; the end of the previous one is kept beside it.
        log = await ws_fake.http.get(f"/api/v1/vms/{vm_id}/console/log", headers=auth(admin))
        assert log.json()["data"]["log"] == "early boot line\r\n"
        assert previous_run_log(driver.console_log(vm_id)).read_bytes() == b"first life\r\n"


async def test_deleting_a_vm_closes_its_terminals(ws_fake: WsServer, admin: str) -> None:
    vm_id = await running(ws_fake, admin, "doomed")
    ticket = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/console", json={}, headers=auth(admin))
    async with ws_fake.events(admin) as ws, connect(ticket.json()["data"]["url"]) as raw:
        await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
        consoles = ws_fake.container.consoles
        async with asyncio.timeout(TIMEOUT):  # the raw stream attached too (its ticket redeemed)
            while consoles.viewer_count(vm_id) < 2:  # noqa: ASYNC110 (server-side state, no event)
                await asyncio.sleep(0.01)
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
    driver = fake(ws_fake)
    async with ws_fake.events(admin) as ws:
        await ws.request("terminal-connect", {"vmId": vm_id}, "terminal-connected")
        ticket = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/console", json={}, headers=auth(admin))
        async with connect(ticket.json()["data"]["url"]) as raw:
            await raw.send(b"ls\r")
            await input_until(driver, vm_id, b"ls\r")
            driver.guest_prints(vm_id, b"\x1b[1mbin\x1b[0m\r\n")
            frame = await asyncio.wait_for(raw.recv(), TIMEOUT)
            assert frame == b"\x1b[1mbin\x1b[0m\r\n"
            assert "\x1b[1mbin" in await output_until(ws, "bin")
        try:
            await ws.request("ping", {}, "pong")
        except ConnectionClosed:  # pragma: no cover - the /ws socket must outlive the raw one
            raise AssertionError("closing the raw stream closed the /ws socket") from None
