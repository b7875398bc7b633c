"""The host's disk on the FakeDriver: the free-space reserve (507 INSUFFICIENT_STORAGE with nothing
half-created), a VM paused by the hypervisor for a full disk, and the allocated bytes in metrics.
The same on real QEMU and a real full filesystem: tests/faults/test_storage.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, auth
from voidvm_server.agent.local import LocalAgent
from voidvm_server.api.errors import status_for
from voidvm_server.domain.models import VMStatus
from voidvm_server.drivers.base import DISK_FULL_REASON
from voidvm_server.drivers.fake import FakeDriver
from voidvm_server.errors import InsufficientStorageError
from voidvm_server.services import context
from voidvm_server.services.disk_reserve import MIB, DiskReserve, free_bytes

BODY = {"name": "thin", "cpu": 1, "memory": 128, "disk": 2}
MORE_THAN_ANY_DISK = 2**62


def fake(api: Api) -> FakeDriver:
    driver = api.container.agent.driver
    assert isinstance(driver, FakeDriver)
    return driver


async def state(api: Api, token: str) -> dict[str, Any]:
    me = await api.client.get("/api/v1/auth/me", headers=auth(token))
    vms = await api.client.get("/api/v1/vms", headers=auth(token))
    return {"usage": me.json()["data"]["usage"], "vms": vms.json()["data"]["vms"]}


def assert_refused(response: Any) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == "INSUFFICIENT_STORAGE" and "disk space" in error["message"]


# -- the reserve itself -----------------------------------------------------------------------------
async def test_the_reserve_refuses_below_it_and_allows_at_or_above_it(tmp_path: Path) -> None:
    free = {tmp_path / "data": 600 * MIB, tmp_path / "data/vms": 400 * MIB}
    reserve = DiskReserve(list(free), 500 * MIB, free=free.__getitem__)
    with pytest.raises(InsufficientStorageError) as refused:
        await reserve.check()  # the VMs' filesystem is the one short of space
    assert refused.value.code == "INSUFFICIENT_STORAGE" and status_for(refused.value) == 507
    assert "500 MB" in refused.value.message
    free[tmp_path / "data/vms"] = 500 * MIB
    await reserve.check()


async def test_a_reserve_of_zero_checks_nothing(tmp_path: Path) -> None:
    def unreadable(path: Path) -> int:
        raise AssertionError("statvfs must not be called")

    await DiskReserve([tmp_path], 0, free=unreadable).check()


def test_free_space_of_a_directory_not_made_yet_is_that_of_its_parent(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    assert abs(free_bytes(tmp_path / "vms/not/yet") - st.f_bavail * st.f_frsize) < 64 * MIB


# -- the API under the reserve (the real filesystem, with a reserve it can never meet) ---------------
async def test_create_under_the_reserve_is_507_and_creates_nothing(api: Api, admin_token: str) -> None:
    before = await state(api, admin_token)
    api.container.vms.reserve.reserve_bytes = MORE_THAN_ANY_DISK
    response = await api.client.post("/api/v1/vms", json=BODY, headers=auth(admin_token))
    assert_refused(response)
    assert await state(api, admin_token) == before  # no row, no quota held
    assert fake(api).disks == {}  # no disk
    logs = await api.client.get("/api/v1/logs", params={"action": "vm.create"}, headers=auth(admin_token))
    assert logs.json()["data"]["logs"][0]["result"] == "failure"
    api.container.vms.reserve.reserve_bytes = 0
    again = await api.client.post("/api/v1/vms", json=BODY, headers=auth(admin_token))
    assert again.status_code == 201, again.text


async def test_growing_a_disk_under_the_reserve_is_507_and_changes_nothing(
    api: Api, admin_token: str
) -> None:
    created = await api.client.post("/api/v1/vms", json=BODY, headers=auth(admin_token))
    vm_id = created.json()["data"]["id"]
    before = await state(api, admin_token)
    api.container.vms.reserve.reserve_bytes = MORE_THAN_ANY_DISK
    response = await api.client.patch(f"/api/v1/vms/{vm_id}", json={"disk": 5}, headers=auth(admin_token))
    assert_refused(response)
    assert await state(api, admin_token) == before
    assert fake(api).disks[vm_id] == 2
    # A change that needs no disk space is not refused.
    renamed = await api.client.patch(
        f"/api/v1/vms/{vm_id}", json={"name": "renamed"}, headers=auth(admin_token)
    )
    assert renamed.status_code == 200, renamed.text


async def test_starting_under_the_reserve_is_507_and_leaves_the_vm_stopped(
    api: Api, admin_token: str
) -> None:
    created = await api.client.post("/api/v1/vms", json=BODY, headers=auth(admin_token))
    vm_id = created.json()["data"]["id"]
    api.container.vms.reserve.reserve_bytes = MORE_THAN_ANY_DISK
    response = await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(admin_token))
    assert_refused(response)
    vm = (await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(admin_token))).json()["data"]
    assert vm["status"] == "stopped" and vm["status_reason"] is None
    assert not fake(api).is_running(vm_id)
    api.container.vms.reserve.reserve_bytes = 0
    started = await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(admin_token))
    assert started.status_code == 200 and started.json()["data"]["status"] == "running"


def test_the_default_reserve_is_the_documented_one_gib() -> None:
    from voidvm_server.config import Settings

    assert Settings.model_fields["disk_reserve_mb"].default == 1024  # README, docs/api.md


# -- paused by the hypervisor ------------------------------------------------------------------------
async def test_a_full_host_disk_pauses_the_vm_with_the_reason_and_resume_runs_it(
    api: Api, admin_token: str
) -> None:
    created = await api.client.post("/api/v1/vms", json=BODY, headers=auth(admin_token))
    vm_id = created.json()["data"]["id"]
    await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(admin_token))
    events, stop = api.container.bus.queue()
    # QEMU's events are read by a task started during the start request: its context names the
    # user who started the VM, who did not pause it.
    token = context.user_name.set("admin")
    try:
        fake(api).pause_on_its_own(vm_id, DISK_FULL_REASON)
    finally:
        context.user_name.reset(token)
    async with asyncio.timeout(10):
        event = await events.get()
        told = await events.get()
    stop()
    assert event.data["status"] == "paused" and event.data["reason"] == DISK_FULL_REASON
    assert told.kind == "system-event" and told.data["event"] == "vm.paused"
    assert told.data["actor"] is None and told.data["message"] == f"VM {vm_id} paused: {DISK_FULL_REASON}"
    vm = (await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(admin_token))).json()["data"]
    assert (vm["status"], vm["status_reason"]) == ("paused", DISK_FULL_REASON)
    status = await api.client.get(f"/api/v1/vms/{vm_id}/status", headers=auth(admin_token))
    assert status.json()["data"]["status_reason"] == DISK_FULL_REASON
    resumed = await api.client.post(f"/api/v1/vms/{vm_id}/resume", headers=auth(admin_token))
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["data"]["status"], resumed.json()["data"]["status_reason"]) == ("running", None)


async def test_a_pause_reported_for_a_vm_stopped_meanwhile_changes_nothing(
    api: Api, admin_token: str
) -> None:
    created = await api.client.post("/api/v1/vms", json=BODY, headers=auth(admin_token))
    vm_id = created.json()["data"]["id"]
    await api.container.vms._record_pause(vm_id, DISK_FULL_REASON)
    vm = await api.container.vms.state.reload(vm_id)
    assert (vm.status, vm.status_reason) == (VMStatus.STOPPED, None)


class IoErrorDriver(FakeDriver):
    """A QEMU found after a server restart, stopped by a full disk while nobody watched."""

    async def attach(self, vm_id: str) -> int | None:
        return 4242 if vm_id in self.running else None

    async def query_status(self, vm_id: str) -> str:
        return "io-error"


async def test_a_vm_found_paused_by_a_full_disk_after_a_restart_is_paused_with_the_reason(
    api: Api, admin_token: str
) -> None:
    created = await api.client.post("/api/v1/vms", json=BODY, headers=auth(admin_token))
    vm_id = created.json()["data"]["id"]
    await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(admin_token))
    svc = api.container.vms
    driver = IoErrorDriver(Path("/nonexistent"))
    driver.running[vm_id] = "paused"
    svc.agent = LocalAgent(driver, images_root=Path("/nonexistent"))
    await svc.recovery.reconcile_one(await svc.state.reload(vm_id))
    vm = await svc.state.reload(vm_id)
    assert (vm.status, vm.status_reason, vm.pid) == (VMStatus.PAUSED, DISK_FULL_REASON, 4242)


# -- allocated bytes ---------------------------------------------------------------------------------
async def test_metrics_report_the_disks_allocated_bytes_running_or_not(api: Api, admin_token: str) -> None:
    created = await api.client.post("/api/v1/vms", json=BODY, headers=auth(admin_token))
    vm_id = created.json()["data"]["id"]
    stopped = await api.client.get(f"/api/v1/vms/{vm_id}/metrics", headers=auth(admin_token))
    assert stopped.json()["data"]["disk"] == {"read_bytes": 0, "write_bytes": 0, "allocated_bytes": 196_608}
    await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(admin_token))
    running = await api.client.get(f"/api/v1/vms/{vm_id}/metrics", headers=auth(admin_token))
    assert running.json()["data"]["disk"]["allocated_bytes"] == 196_608
