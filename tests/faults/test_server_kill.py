"""kill -9 of the server process: with five VMs running (issue #7, case 1)."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect

from tests.conftest import TCG_SCALE, serial_command
from tests.faults.conftest import (
    READY_LINE,
    ServerFactory,
    assert_consistent,
    metric,
    qemu_pids,
)
from tests.integration.conftest import wait_gone

pytestmark = pytest.mark.qemu
VMS = 5


async def raw_console_command(url: str, command: str, expect: str, timeout: float) -> bytes:
    """Type into the guest through the server's raw serial WebSocket and read until `expect`."""
    buffer = b""
    async with connect(url, open_timeout=10, max_size=None) as conn:
        await conn.send(f"\n{command}\n")
        async with asyncio.timeout(timeout):
            while expect.encode() not in buffer:
                frame = await conn.recv()
                buffer += frame if isinstance(frame, bytes) else frame.encode()
    return buffer


async def test_kill_9_of_the_server_leaves_five_vms_running_and_a_restart_adopts_them(
    servers: ServerFactory,
) -> None:
    server = await servers()
    await server.start()
    async with server.api() as http:
        ids = [(await http.create_vm(f"keep-{i}"))["id"] for i in range(VMS)]
        for vm_id in ids:
            await http.action(vm_id, "start")
        pids = {vm_id: (await http.live(vm_id))["pid"] for vm_id in ids}
        ports = {vm_id: (await http.vm(vm_id))["ports"] for vm_id in ids}
        await asyncio.gather(*(http.wait_console(vm_id, READY_LINE) for vm_id in ids))
        usage = await http.usage()

    server.kill9()
    # The VMs do not notice: same processes, and the guests still answer on their consoles.
    for vm_id in ids:
        assert qemu_pids(vm_id) == [pids[vm_id]]
    sockets = {vm_id: server.vms_dir / vm_id / "serial.sock" for vm_id in ids}
    assert await serial_command(sockets[ids[0]], "echo while-down-$((6*7))") == "while-down-42"
    log_size = {vm_id: (server.vms_dir / vm_id / "console.log").stat().st_size for vm_id in ids}

    began = time.monotonic()
    await server.start()
    metric("server_restart_with_5_vms_seconds", round(time.monotonic() - began, 2))
    async with server.api() as http:
        assert await http.usage() == usage
        for vm_id in ids:
            vm = await http.vm(vm_id)
            assert vm["status"] == "running", vm
            assert vm["ports"] == ports[vm_id]
            live = await http.live(vm_id)
            assert (live["pid"], live["qemu_status"]) == (pids[vm_id], "running")
            assert qemu_pids(vm_id) == [pids[vm_id]], "a second QEMU was started"
        # While the server was down nothing recorded the console (QEMU discards serial output
        # no one reads, so it cannot fill the disk): the saved log is what came before.
        saved = await http.console_log(ids[0])
        assert "while-down-42" not in saved and READY_LINE in saved

        # The restarted server holds every guest's console again: its console stream reaches
        # guests it did not start, and their logs grow from where they were.
        for n, vm_id in enumerate(ids):
            response = await http.client.post(f"/vms/{vm_id}/console", json={"type": "serial"})
            assert response.status_code == 201, response.text
            output = await raw_console_command(
                response.json()["data"]["url"], f"echo after-{n}-$((40+{n}))", f"after-{n}-{40 + n}",
                30 * TCG_SCALE,
            )  # fmt: skip
            assert f"after-{n}-{40 + n}".encode() in output
            await http.wait_console(vm_id, f"after-{n}-{40 + n}", timeout=10 * TCG_SCALE)
            assert (server.vms_dir / vm_id / "console.log").stat().st_size > log_size[vm_id]

        # Metrics come from the adopted processes.
        response = await http.client.get(f"/vms/{ids[1]}/metrics")
        assert response.status_code == 200 and response.json()["data"]["memory"]["used_mb"] > 0

        await assert_consistent(http, server.data_dir)

        # Stop (one through ACPI, the rest forced) and delete all of them.
        stopped = await http.action(ids[0], "stop", timeout=30 * TCG_SCALE)
        assert stopped["data"]["status"] == "stopped"
        for vm_id in ids[1:]:
            assert (await http.action(vm_id, "stop", force=True))["data"]["status"] == "stopped"
        for vm_id in ids:
            await wait_gone(pids[vm_id])
            assert qemu_pids(vm_id) == []
            await http.delete(vm_id)
        assert await http.vms() == []
        assert (await http.usage())["vms"] == 0
        assert list(server.vms_dir.iterdir()) == []
    assert qemu_pids(str(server.data_dir)) == []
