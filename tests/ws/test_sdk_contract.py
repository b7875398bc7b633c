"""The Python SDK (sdk/python) against the real server: the WebSocket contract it relies on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from voidvm import AsyncVoidVMClient, Topics

from tests.ws.conftest import BOOT_TIMEOUT, WsServer


async def client_for(server: WsServer) -> AsyncVoidVMClient:
    return await AsyncVoidVMClient.login(f"http://127.0.0.1:{server.port}/api/v1", "admin", "admin123")


async def test_sdk_event_stream_sees_a_start_and_resumes_after_a_drop(ws_fake: WsServer) -> None:
    client = await client_for(ws_fake)
    async with client:
        one = (await client.vms.create({"name": "sdk-one", "cpu": 1, "memory": 256, "disk": 1}))["id"]
        two = (await client.vms.create({"name": "sdk-two", "cpu": 1, "memory": 256, "disk": 1}))["id"]
        seen: list[tuple[str, str]] = []
        # Resuming from "now" makes the test independent of when the stream's first read subscribes.
        mark = await ws_fake.container.events.last_id()
        topics = [Topics.vm_status(one), Topics.vm_status(two)]
        stream = client.events(topics, reconnect_delay=0.05, last_event_id=mark)
        async with stream:
            events = aiter(stream)

            async def until(vm_id: str, status: str) -> None:
                async with asyncio.timeout(20):
                    while True:
                        event = await anext(events)
                        if event.type == "vm-status":
                            seen.append((event.data["vmId"], event.data["status"]))
                            if (event.data["vmId"], event.data["status"]) == (vm_id, status):
                                return

            await client.vms.start(one)
            await until(one, "running")
            user_id: Any = (await client.auth.me())["id"]
            # Drop the socket server-side ("try again later"), change both VMs while it is gone.
            assert ws_fake.container.ws_hub.close_for_user(user_id, 1013, "test drop") == 1
            await client.vms.stop(one)
            await client.vms.start(two)
            await until(two, "running")
        assert stream.reconnects >= 1
    assert seen == [
        (one, "starting"), (one, "running"),
        (one, "stopping"), (one, "stopped"), (two, "starting"), (two, "running"),
    ]  # fmt: skip


@pytest.mark.qemu
async def test_sdk_console_types_into_a_real_guest(ws_qemu: WsServer) -> None:
    client = await client_for(ws_qemu)
    async with client:
        vm = await client.vms.create({"name": "sdk-console", "cpu": 1, "memory": 256, "disk": 1})
        await client.vms.start(vm["id"])
        async with client.console(vm["id"]) as console:
            await console.wait_for_output("VoidVM tiny guest ready", timeout=BOOT_TIMEOUT)
            await console.write("\necho sdk-$((2*21))\n")
            match = await console.wait_for_output("sdk-42", timeout=BOOT_TIMEOUT / 2)
            assert match.group(0) == "sdk-42"
