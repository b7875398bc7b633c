"""kill -9 of the server in the middle of a create, a start or a delete (issue #7, case 2).

The server is started with VOIDVM_TEST_PAUSE_AT=<point>: the VM service writes
`<data>/paused-at-<point>` when it gets there and hangs, and the test kills it at that moment.
After a restart (without the hook) every VM must be consistent (`assert_consistent`), and the
interrupted operation must have been finished or reported, never silently lost.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import Http, ServerFactory, ServerProcess, assert_consistent, qemu_pids

pytestmark = pytest.mark.qemu


async def interrupted(server: ServerProcess, point: str, request: Any) -> None:
    """Send `request` (a coroutine), wait for the server to reach `point`, kill -9 it."""
    task = asyncio.ensure_future(request)
    await asyncio.to_thread(server.wait_marker, point)
    server.kill9()
    with pytest.raises(httpx.HTTPError):  # the answer never comes
        await task


def forwarded_ssh_port(run_dir: Path) -> int:
    """The loopback port that the VM's passt forwards to the guest's port 22."""
    passt = int((run_dir / "passt.pid").read_text())
    cmdline = Path(f"/proc/{passt}/cmdline").read_bytes().decode()
    match = re.search(r"127\.0\.0\.1/(\d+):22", cmdline)
    assert match, cmdline
    return int(match.group(1))


async def with_bystanders(server: ServerProcess, point: str) -> tuple[str, str, int]:
    """A stopped and a running VM that the interruption must not touch (made before the hook is
    set, since it would stop them too); then the server again, paused at `point`."""
    await server.start()
    async with server.api() as http:
        idle = (await http.create_vm("bystander-idle"))["id"]
        busy = (await http.create_vm("bystander-busy"))["id"]
        await http.action(busy, "start")
        busy_pid = (await http.live(busy))["pid"]
    server.stop()  # a clean stop this time; the VM keeps running
    await server.start(VOIDVM_TEST_PAUSE_AT=point)
    return idle, busy, busy_pid


async def check_bystanders(http: Http, idle: str, busy: str, busy_pid: int) -> None:
    assert (await http.vm(idle))["status"] == "stopped"
    assert (await http.vm(busy))["status"] == "running"
    assert qemu_pids(busy) == [busy_pid]


@pytest.mark.parametrize("point", ["after-create-insert", "after-create-disk"])
async def test_kill_during_a_create_finishes_it_after_the_restart(servers: ServerFactory, point: str) -> None:
    server = await servers()
    idle, busy, busy_pid = await with_bystanders(server, point)
    async with server.api() as http:
        body = {"name": "halfway", "cpu": 1, "memory": 256, "disk": 1}
        await interrupted(server, point, http.client.post("/vms", json=body))
    await server.start()
    async with server.api() as http:
        vms = {vm["name"]: vm for vm in await assert_consistent(http, server.data_dir)}
        # The create that never got its 201 is finished: the row, its quota and now its disk.
        assert vms["halfway"]["status"] == "stopped", vms["halfway"]
        await check_bystanders(http, idle, busy, busy_pid)
        # It is a normal VM: it starts, and a second create with its name is refused.
        await http.action(vms["halfway"]["id"], "start")
        response = await http.client.post(
            "/vms", json={"name": "halfway", "cpu": 1, "memory": 256, "disk": 1}
        )
        assert response.status_code == 409, response.text
        await assert_consistent(http, server.data_dir)


async def test_kill_before_the_spawn_leaves_an_error_with_a_reason(servers: ServerFactory) -> None:
    server = await servers()
    idle, busy, busy_pid = await with_bystanders(server, "before-spawn")
    async with server.api() as http:
        vm_id = (await http.create_vm("never-started"))["id"]
        await interrupted(server, "before-spawn", http.client.post(f"/vms/{vm_id}/start"))
    assert qemu_pids(vm_id) == []
    await server.start()
    async with server.api() as http:
        await assert_consistent(http, server.data_dir)
        vm = await http.vm(vm_id)
        assert vm["status"] == "error"
        assert "start was interrupted while the server was down" in vm["status_reason"]
        assert vm["ports"] == {}
        await check_bystanders(http, idle, busy, busy_pid)
        # Nothing was lost: it starts now.
        started = await http.action(vm_id, "start")
        assert started["data"]["status"] == "running" and started["data"]["status_reason"] is None
        await assert_consistent(http, server.data_dir)


async def test_kill_after_the_spawn_adopts_the_qemu_that_was_started(servers: ServerFactory) -> None:
    server = await servers()
    idle, busy, busy_pid = await with_bystanders(server, "after-spawn")
    async with server.api() as http:
        vm_id = (await http.create_vm("spawned"))["id"]
        await interrupted(server, "after-spawn", http.client.post(f"/vms/{vm_id}/start"))
    [pid] = qemu_pids(vm_id)  # the row still says `starting`
    await server.start()
    async with server.api() as http:
        await assert_consistent(http, server.data_dir)
        vm = await http.vm(vm_id)
        assert vm["status"] == "running", vm
        assert (await http.live(vm_id))["pid"] == pid
        assert qemu_pids(vm_id) == [pid], "a second QEMU was started"
        # The SSH port was recorded before the spawn, so the API shows the one passt forwards.
        assert vm["ports"] == {"ssh": forwarded_ssh_port(server.vms_dir / vm_id)}
        await check_bystanders(http, idle, busy, busy_pid)
        # A start now is refused (it runs); stop works.
        await http.action(vm_id, "start", expect=409)
        assert (await http.action(vm_id, "stop", force=True))["data"]["status"] == "stopped"
        assert qemu_pids(vm_id) == []
        await assert_consistent(http, server.data_dir)


async def test_kill_in_the_middle_of_a_delete_finishes_the_delete(servers: ServerFactory) -> None:
    server = await servers()
    idle, busy, busy_pid = await with_bystanders(server, "after-delete-files")
    async with server.api() as http:
        vm_id = (await http.create_vm("doomed"))["id"]
        await http.action(vm_id, "start")
        await interrupted(server, "after-delete-files", http.client.delete(f"/vms/{vm_id}?force=true"))
    assert qemu_pids(vm_id) == []  # the forced delete killed it before removing the files
    await server.start()
    async with server.api() as http:
        vms = await assert_consistent(http, server.data_dir)
        assert {vm["id"] for vm in vms} == {idle, busy}  # asked for: gone; not asked for: kept
        await check_bystanders(http, idle, busy, busy_pid)
        response = await http.client.get(f"/vms/{vm_id}")
        assert response.status_code == 404
        assert (await http.usage())["vms"] == 2


async def test_a_background_start_killed_halfway_ends_its_operation_failed(servers: ServerFactory) -> None:
    """`wait: false` answers before the spawn; a kill -9 then must not leave the operation
    `running` for good: the next start says it was cut short."""
    server = await servers()
    await server.start()
    async with server.api() as http:
        vm_id = (await http.create_vm("in-the-background"))["id"]
    server.stop()
    await server.start(VOIDVM_TEST_PAUSE_AT="before-spawn")
    async with server.api() as http:
        accepted = await http.client.post(f"/vms/{vm_id}/start", json={"wait": False})
        assert accepted.status_code == 202, accepted.text
        op_id = accepted.json()["operation"]["id"]
        await asyncio.to_thread(server.wait_marker, "before-spawn")
        assert (await http.client.get(f"/operations/{op_id}")).json()["data"]["status"] == "running"
    server.kill9()
    assert qemu_pids(vm_id) == []
    await server.start()
    async with server.api() as http:
        op = (await http.client.get(f"/operations/{op_id}/wait?timeout=0")).json()["data"]
        assert op["status"] == "failed" and op["error"]["code"] == "INTERRUPTED", op
        assert op["finished_at"] is not None
        assert (await http.vm(vm_id))["status"] == "error"
        await assert_consistent(http, server.data_dir)
