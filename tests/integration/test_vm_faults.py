"""Faults with real QEMU: the process killed under the server, and the server restarted under
running VMs (with one VM's QEMU killed while the server was down)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import TCG_SCALE, Api, auth
from tests.integration.conftest import (
    BOOT_TIMEOUT,
    READY_LINE,
    AppFactory,
    action,
    console_log,
    create_vm,
    get_vm,
    poll,
    qemu_pids,
    serial_run,
    serial_send,
    wait_console,
    wait_gone,
    wait_status,
)
from voidvm_server.agent.port import VMExited
from voidvm_server.drivers.fake import FakeDriver

DETECT_TIMEOUT = 5 * TCG_SCALE  # "within a few seconds"


async def live_status(api: Api, token: str, vm_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/vms/{vm_id}/status", headers=auth(token))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.mark.qemu
async def test_process_exits_under_a_running_server(qemu_api: Api, qemu_token: str) -> None:
    """A crash (kill -9) is an error the VM recovers from; the guest's own poweroff is a stop."""
    api, token = qemu_api, qemu_token
    vm_id = (await create_vm(api, token, "victim"))["id"]
    await action(api, token, vm_id, "start")
    pid = (await live_status(api, token, vm_id))["pid"]
    assert qemu_pids(vm_id) == [pid]

    os.kill(pid, signal.SIGKILL)
    failed = await wait_status(api, token, vm_id, "error", timeout=DETECT_TIMEOUT)
    assert "unexpectedly" in failed["status_reason"]
    assert failed["started_at"] is None
    assert failed["ports"] == {}
    status = await live_status(api, token, vm_id)
    assert (status["pid"], status["qemu_status"]) == (None, None)

    # The VM is not lost: it starts again, with a fresh process, and boots.
    restarted = await action(api, token, vm_id, "start")
    assert restarted["data"]["status"] == "running"
    assert restarted["data"]["status_reason"] is None
    new_pid = (await live_status(api, token, vm_id))["pid"]
    assert new_pid != pid
    assert qemu_pids(vm_id) == [new_pid]
    await wait_console(api, token, vm_id, READY_LINE)

    # `poweroff` typed in the guest: QEMU exits on the guest's request, which is no error.
    await serial_send(api, vm_id, "\npoweroff\n", "The system is going down")
    # Hold the event loop until QEMU is gone, as a busy server might: its SHUTDOWN event and its
    # exit then reach the server at the same time, and the exit must not win.
    deadline = time.monotonic() + BOOT_TIMEOUT
    while new_pid in qemu_pids(vm_id) and time.monotonic() < deadline:
        time.sleep(0.05)  # blocking on purpose
    assert qemu_pids(vm_id) == []

    async def settled() -> dict[str, Any] | None:
        vm = await get_vm(api, token, vm_id)
        return vm if vm["status"] != "running" else None

    vm = await poll(settled, timeout=DETECT_TIMEOUT, what="the exit to be recorded")
    assert (vm["status"], vm["status_reason"]) == ("stopped", "the guest powered itself off")
    assert vm["started_at"] is None


@pytest.mark.qemu
async def test_server_restart_reattaches_to_running_vms(restartable_qemu: AppFactory) -> None:
    async with restartable_qemu() as api:
        token = await api.login()
        keeper = (await create_vm(api, token, "keeper"))["id"]
        lost = (await create_vm(api, token, "lost"))["id"]
        for vm_id in (keeper, lost):
            await action(api, token, vm_id, "start")
        await wait_console(api, token, keeper, READY_LINE)
        keeper_pid = (await live_status(api, token, keeper))["pid"]
        lost_pid = (await live_status(api, token, lost))["pid"]

    # The server is down; its VMs are not.
    assert qemu_pids(keeper) == [keeper_pid]
    assert qemu_pids(lost) == [lost_pid]
    os.kill(lost_pid, signal.SIGKILL)
    await wait_gone(lost_pid)

    async with restartable_qemu() as api:
        token = await api.login()
        vm = await get_vm(api, token, keeper)
        assert vm["status"] == "running"
        assert vm["started_at"] is not None
        status = await live_status(api, token, keeper)
        assert (status["pid"], status["qemu_status"]) == (keeper_pid, "running")
        assert status["uptime"] > 0
        assert qemu_pids(keeper) == [keeper_pid]  # re-attached, no second QEMU

        failed = await get_vm(api, token, lost)
        assert failed["status"] == "error"
        assert "while the server was down" in failed["status_reason"]
        assert qemu_pids(lost) == []

        # The re-attached VM is fully controllable: metrics, pause/resume, ACPI stop.
        response = await api.client.get(f"/api/v1/vms/{keeper}/metrics", headers=auth(token))
        assert response.status_code == 200
        assert response.json()["data"]["memory"]["used_mb"] > 0
        await action(api, token, keeper, "pause")
        assert (await live_status(api, token, keeper))["qemu_status"] == "paused"
        await action(api, token, keeper, "resume")
        stopped = await action(api, token, keeper, "stop")
        assert stopped["data"]["status"] == "stopped"
        await wait_gone(keeper_pid)
        assert qemu_pids(keeper) == []

        # The lost VM starts again.
        await action(api, token, lost, "start")
        assert len(qemu_pids(lost)) == 1
        await action(api, token, lost, "stop", force=True)
        assert qemu_pids(lost) == []


@pytest.mark.qemu
async def test_restart_while_stopped_and_paused(restartable_qemu: AppFactory) -> None:
    """A paused VM comes back paused; a stopped one stays stopped; an exit after the restart is seen."""
    async with restartable_qemu() as api:
        token = await api.login()
        paused = (await create_vm(api, token, "sleeper"))["id"]
        idle = (await create_vm(api, token, "idle"))["id"]
        await action(api, token, paused, "start")
        await action(api, token, paused, "pause")
        pid = (await live_status(api, token, paused))["pid"]

    async with restartable_qemu() as api:
        token = await api.login()
        assert (await get_vm(api, token, idle))["status"] == "stopped"
        vm = await get_vm(api, token, paused)
        assert vm["status"] == "paused"
        assert (await live_status(api, token, paused))["qemu_status"] == "paused"
        assert qemu_pids(paused) == [pid]
        # The new server watches the process it re-attached to.
        os.kill(pid, signal.SIGKILL)
        failed = await wait_status(api, token, paused, "error", timeout=DETECT_TIMEOUT)
        assert failed["status_reason"]


@pytest.mark.qemu
async def test_stop_of_a_paused_vm_is_graceful(qemu_api: Api, qemu_token: str) -> None:
    """A paused guest is let run for the power button instead of being killed after the timeout."""
    api, token = qemu_api, qemu_token
    vm_id = (await create_vm(api, token, "pausedstop"))["id"]
    await action(api, token, vm_id, "start")
    await wait_console(api, token, vm_id, READY_LINE)
    await action(api, token, vm_id, "pause")
    timeout = 20 * TCG_SCALE
    began = time.monotonic()
    stopped = await action(api, token, vm_id, "stop", timeout=timeout)
    took = time.monotonic() - began
    assert stopped["data"]["status"] == "stopped"
    assert took < timeout / 2, f"stop of a paused VM took {took:.1f}s"
    assert "power button pressed" in await console_log(api, token, vm_id)
    assert qemu_pids(vm_id) == []


@pytest.mark.qemu
async def test_guest_ignoring_the_power_button_is_killed_after_the_timeout(
    qemu_api: Api, qemu_token: str
) -> None:
    api, token = qemu_api, qemu_token
    vm_id = (await create_vm(api, token, "stubborn"))["id"]
    await action(api, token, vm_id, "start")
    await wait_console(api, token, vm_id, READY_LINE)
    assert await serial_run(api, vm_id, "killall acpid; echo killed") == "killed"
    began = time.monotonic()
    stopped = await action(api, token, vm_id, "stop", timeout=2)
    took = time.monotonic() - began
    assert stopped["data"]["status"] == "stopped"
    assert 2 <= took < 2 + 10 * TCG_SCALE, took
    assert qemu_pids(vm_id) == []
    assert "power button pressed" not in await console_log(api, token, vm_id)


@pytest.mark.qemu
async def test_qemu_refusing_to_start_gives_error_with_a_reason(qemu_api: Api, qemu_token: str) -> None:
    api, token = qemu_api, qemu_token
    vm_id = (await create_vm(api, token, "broken"))["id"]
    disk = api.container.agent.driver.run_dir(vm_id) / "disk.qcow2"
    disk.write_bytes(b"not a qcow2 image")

    response = await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error"]["code"] == "HYPERVISOR_ERROR"
    assert str(api.container.settings.data_dir) not in response.text
    vm = await get_vm(api, token, vm_id)
    assert vm["status"] == "error"
    assert "QEMU failed to start" in vm["status_reason"]
    assert "qcow2" in vm["status_reason"]  # QEMU's own words, for the owner to act on
    assert str(api.container.settings.data_dir) not in vm["status_reason"], vm["status_reason"]
    assert "/" not in vm["status_reason"], vm["status_reason"]  # no host path at all
    assert qemu_pids(vm_id) == []

    # Deleting it works and leaves nothing behind.
    response = await api.client.delete(f"/api/v1/vms/{vm_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    assert not disk.parent.exists()


# -- an exit reported late (FakeDriver: the order of events is ours to choose) -----------------
async def late_exit(api: Api, vm_id: str) -> Callable[[], Awaitable[None]]:
    """End the VM's 'process' now, and return a function that reports the exit later (as the
    QEMU driver does while it drains QMP events)."""
    driver = api.container.agent.driver
    assert isinstance(driver, FakeDriver)
    driver.running.pop(vm_id)
    pid = driver.pids.pop(vm_id)

    async def report() -> None:
        api.container.vms.handle_host_event(
            VMExited(vm_id, pid, False, "the QEMU process exited unexpectedly")
        )
        await api.container.tasks.wait_idle()

    return report


async def test_restart_right_after_an_unreported_exit(api: Api, admin_token: str) -> None:
    vm_id = (await create_vm(api, admin_token, "phoenix"))["id"]
    await action(api, admin_token, vm_id, "start")
    report = await late_exit(api, vm_id)
    restarted = await action(api, admin_token, vm_id, "restart")
    assert restarted["data"]["status"] == "running"
    await report()  # about the process that is gone, not the new one
    vm = await get_vm(api, admin_token, vm_id)
    assert (vm["status"], vm["status_reason"]) == ("running", None)
    assert api.container.agent.driver.is_running(vm_id)


async def test_stop_right_after_an_unreported_exit(api: Api, admin_token: str) -> None:
    vm_id = (await create_vm(api, admin_token, "gone"))["id"]
    await action(api, admin_token, vm_id, "start")
    report = await late_exit(api, vm_id)
    stopped = await action(api, admin_token, vm_id, "stop")
    assert stopped["data"]["status"] == "stopped"
    await report()
    assert (await get_vm(api, admin_token, vm_id))["status"] == "stopped"
    started = await action(api, admin_token, vm_id, "start")
    assert started["data"]["status"] == "running"
