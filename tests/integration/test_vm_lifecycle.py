"""A real VM's whole life through the API: create, start, pause/resume, reset, restart, ACPI stop,
force stop, illegal transitions, metrics, delete. One VM is shared across the asserts so the suite
boots as few guests as possible."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, auth, let_tiny_serve_ssh
from tests.integration.conftest import (
    BOOT_TIMEOUT,
    BOOTING_LINE,
    READY_LINE,
    STOP_TIMEOUT,
    action,
    console_log,
    create_vm,
    get_vm,
    poll,
    qemu_pids,
    wait_console,
    wait_gone,
    wait_status,
)

pytestmark = pytest.mark.qemu
SEED_BODY = {"name": "test-vm", "cpu": 2, "memory": 2048, "disk": 20, "os": "ubuntu20.04"}


def error_code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def live_status(api: Api, token: str, vm_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/vms/{vm_id}/status", headers=auth(token))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_seed_create_body_is_accepted_and_fails_clearly_without_downloads(
    qemu_api: Api, qemu_token: str
) -> None:
    response = await qemu_api.client.post("/api/v1/vms", json=SEED_BODY, headers=auth(qemu_token))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["success"] is True
    vm = body["data"]
    assert vm["id"].startswith("vm-")
    assert {k: vm[k] for k in SEED_BODY} == SEED_BODY
    assert vm["status"] == "creating"

    failed = await wait_status(qemu_api, qemu_token, vm["id"], "error")
    assert "ubuntu20.04" in failed["status_reason"]
    assert "downloads are disabled" in failed["status_reason"]
    # A VM whose image never arrived can still be deleted, and gives its quota back.
    response = await qemu_api.client.delete(f"/api/v1/vms/{vm['id']}", headers=auth(qemu_token))
    assert response.status_code == 200, response.text
    me = (await qemu_api.client.get("/api/v1/auth/me", headers=auth(qemu_token))).json()["data"]
    assert me["usage"]["vms"] == 0


async def test_lifecycle_of_a_real_vm(qemu_api: Api, qemu_token: str) -> None:
    api, token = qemu_api, qemu_token
    vm = await create_vm(api, token, "life")
    vm_id = vm["id"]
    assert vm["status"] == "stopped"
    run_dir = api.container.agent.driver.run_dir(vm_id)
    assert (run_dir / "disk.qcow2").is_file()

    # -- start: 200 with the VM running, and the guest reaches its shell
    started = await action(api, token, vm_id, "start")
    assert started["data"]["status"] == "running"
    assert started["data"]["started_at"]
    log = await wait_console(api, token, vm_id, READY_LINE)
    assert BOOTING_LINE in log
    first_pid = (await live_status(api, token, vm_id))["pid"]
    assert qemu_pids(vm_id) == [first_pid]

    # -- illegal transitions while running
    response = await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))
    assert (response.status_code, error_code(response)) == (409, "VM_ALREADY_RUNNING")
    response = await api.client.delete(f"/api/v1/vms/{vm_id}", headers=auth(token))
    assert (response.status_code, error_code(response)) == (409, "INVALID_STATE")
    response = await api.client.post(f"/api/v1/vms/{vm_id}/resume", headers=auth(token))
    assert (response.status_code, error_code(response)) == (409, "INVALID_STATE")

    # -- live status and metrics
    status = await live_status(api, token, vm_id)
    assert status["status"] == "running"
    assert status["qemu_status"] == "running"
    assert status["uptime"] > 0
    response = await api.client.get(f"/api/v1/vms/{vm_id}/metrics", headers=auth(token))
    assert response.status_code == 200, response.text
    metrics = response.json()["data"]
    assert metrics["vm_id"] == vm_id
    assert metrics["cpu_percent"] >= 0
    assert metrics["memory"]["used_mb"] > 0
    assert metrics["memory"]["total_mb"] == vm["memory"]
    assert metrics["uptime"] > 0
    assert metrics["disk"]["read_bytes"] >= 0

    # -- pause / resume: QEMU itself reports the state
    paused = await action(api, token, vm_id, "pause")
    assert paused["data"]["status"] == "paused"
    status = await live_status(api, token, vm_id)
    assert (status["status"], status["qemu_status"]) == ("paused", "paused")
    response = await api.client.post(f"/api/v1/vms/{vm_id}/pause", headers=auth(token))
    assert (response.status_code, error_code(response)) == (409, "INVALID_STATE")
    resumed = await action(api, token, vm_id, "resume")
    assert resumed["data"]["status"] == "running"
    status = await live_status(api, token, vm_id)
    assert (status["status"], status["qemu_status"]) == ("running", "running")

    # -- reset: same process, the guest boots again
    reset = await action(api, token, vm_id, "reset")
    assert reset["data"]["status"] == "running"

    async def booted_twice() -> bool:
        return (await console_log(api, token, vm_id)).count(READY_LINE) >= 2

    await poll(booted_twice, timeout=BOOT_TIMEOUT, what="the guest to boot again after reset")
    assert (await live_status(api, token, vm_id))["pid"] == first_pid

    # -- restart: the guest powers off through ACPI and a new QEMU boots it
    restarted = await action(api, token, vm_id, "restart")
    assert restarted["data"]["status"] == "running"
    await wait_gone(first_pid)
    second_pid = (await live_status(api, token, vm_id))["pid"]
    assert second_pid != first_pid
    assert qemu_pids(vm_id) == [second_pid]
    previous_log = (run_dir / "console.previous.log").read_text(errors="replace")
    assert "power button pressed" in previous_log  # the old guest shut itself down
    assert "power button" not in await console_log(api, token, vm_id)  # the new run's log
    await wait_console(api, token, vm_id, READY_LINE)

    # -- stop: ACPI power-off, the guest's own shutdown, well before the timeout
    began = time.monotonic()
    stopped = await action(api, token, vm_id, "stop", force=False)
    took = time.monotonic() - began
    assert stopped["data"]["status"] == "stopped"
    assert stopped["data"]["started_at"] is None
    assert took < STOP_TIMEOUT, f"stop took {took:.1f}s: the guest ignored the power button"
    assert "power button pressed, powering off" in await console_log(api, token, vm_id)
    assert qemu_pids(vm_id) == []
    status = await live_status(api, token, vm_id)
    assert (status["status"], status["pid"], status["qemu_status"]) == ("stopped", None, None)

    # -- illegal transitions while stopped
    for name in ("stop", "pause", "restart", "reset"):
        response = await api.client.post(f"/api/v1/vms/{vm_id}/{name}", headers=auth(token))
        assert (response.status_code, error_code(response)) == (409, "VM_NOT_RUNNING"), name
    response = await api.client.post(f"/api/v1/vms/{vm_id}/resume", headers=auth(token))
    assert response.status_code == 409

    # -- metrics of a stopped VM are zeros, not an error
    response = await api.client.get(f"/api/v1/vms/{vm_id}/metrics", headers=auth(token))
    assert response.status_code == 200
    assert response.json()["data"]["uptime"] == 0

    # -- force stop: no waiting for the guest at all
    await action(api, token, vm_id, "start")
    pid = (await live_status(api, token, vm_id))["pid"]
    began = time.monotonic()
    stopped = await action(api, token, vm_id, "stop", force=True)
    assert stopped["data"]["status"] == "stopped"
    assert time.monotonic() - began < 10
    assert qemu_pids(vm_id) == []
    assert "power button" not in await console_log(api, token, vm_id)
    await wait_gone(pid)

    # -- delete: no process, no run directory, no disk, no row
    response = await api.client.delete(f"/api/v1/vms/{vm_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    assert not run_dir.exists()
    response = await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(token))
    assert (response.status_code, error_code(response)) == (404, "VM_NOT_FOUND")


async def test_wait_false_answers_202_and_gets_there(qemu_api: Api, qemu_token: str) -> None:
    api, token = qemu_api, qemu_token
    vm_id = (await create_vm(api, token, "nowait"))["id"]
    accepted = await action(api, token, vm_id, "start", expect=202, wait=False)
    assert accepted["data"]["status"] in {"starting", "running"}
    await wait_status(api, token, vm_id, "running")
    await action(api, token, vm_id, "stop", expect=202, wait=False, force=True)
    await wait_status(api, token, vm_id, "stopped")
    assert qemu_pids(vm_id) == []


async def test_a_stop_while_the_guest_boots_says_it_did_not_answer(qemu_api: Api, qemu_token: str) -> None:
    api, token = qemu_api, qemu_token
    vm_id = (await create_vm(api, token, "early"))["id"]
    await action(api, token, vm_id, "start")  # QEMU runs; the kernel has barely begun
    pid = (await live_status(api, token, vm_id))["pid"]
    # 1 s is far less than a tcg boot takes to reach acpid: nobody handles the button yet.
    stopped = (await action(api, token, vm_id, "stop", timeout=1))["data"]
    assert stopped["status"] == "stopped"
    assert stopped["status_reason"] == (
        "the guest did not answer the ACPI power button within 1 s (it may still have been "
        "booting); it was powered off"
    )
    await wait_gone(pid)
    assert qemu_pids(vm_id) == []


async def test_a_vm_keeps_its_ssh_port_through_restarts(qemu_api: Api, qemu_token: str) -> None:
    api, token = qemu_api, qemu_token
    await let_tiny_serve_ssh(api.container.db)
    vm_id = (await create_vm(api, token, "steady"))["id"]
    port = (await action(api, token, vm_id, "start"))["data"]["ports"]["ssh"]
    # A forced restart starts the new QEMU right after the old one's passt was killed: the port
    # is free again only once that passt is gone.
    for _ in range(3):
        vm = (await action(api, token, vm_id, "restart", force=True))["data"]
        assert (vm["ports"], vm["status_reason"]) == ({"ssh": port}, None)
    await action(api, token, vm_id, "stop", force=True)
    assert (await action(api, token, vm_id, "start"))["data"]["ports"] == {"ssh": port}


async def test_force_delete_of_a_running_vm(qemu_api: Api, qemu_token: str) -> None:
    api, token = qemu_api, qemu_token
    vm_id = (await create_vm(api, token, "doomed"))["id"]
    await action(api, token, vm_id, "start")
    pid = (await live_status(api, token, vm_id))["pid"]
    run_dir: Path = api.container.agent.driver.run_dir(vm_id)

    response = await api.client.delete(f"/api/v1/vms/{vm_id}", headers=auth(token))
    assert (response.status_code, error_code(response)) == (409, "INVALID_STATE")
    response = await api.client.delete(f"/api/v1/vms/{vm_id}", params={"force": "true"}, headers=auth(token))
    assert response.status_code == 200, response.text
    await wait_gone(pid)
    assert qemu_pids(vm_id) == []
    assert not run_dir.exists()
    response = await api.client.get("/api/v1/vms", headers=auth(token))
    assert vm_id not in {v["id"] for v in response.json()["data"]["vms"]}
    me = (await api.client.get("/api/v1/auth/me", headers=auth(token))).json()["data"]
    assert me["usage"]["vms"] == 0
    # Nothing is left to report: the VM is gone, not in `error`.
    assert await get_vm_or_none(api, token, vm_id) is None


async def get_vm_or_none(api: Api, token: str, vm_id: str) -> dict[str, Any] | None:
    response = await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(token))
    if response.status_code == 404:
        return None
    return await get_vm(api, token, vm_id)
