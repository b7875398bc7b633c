"""Growing a VM's disk: only while stopped, only upwards, and the guest sees the new size."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import Api, auth
from tests.integration.conftest import READY_LINE, action, create_vm, serial_run, wait_console

pytestmark = pytest.mark.qemu
SECTORS_PER_GIB = 1024**3 // 512


def virtual_size(api: Api, vm_id: str) -> int:
    disk = api.container.agent.driver.run_dir(vm_id) / "disk.qcow2"
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(disk)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    size: int = json.loads(out)["virtual-size"]
    return size


async def test_disk_growth_is_seen_by_the_guest(qemu_api: Api, qemu_token: str) -> None:
    api, token = qemu_api, qemu_token
    vm = await create_vm(api, token, "grower", disk=1)
    vm_id = vm["id"]
    assert virtual_size(api, vm_id) == 1024**3

    response = await api.client.put(f"/api/v1/vms/{vm_id}", json={"disk": 2}, headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["disk"] == 2
    assert virtual_size(api, vm_id) == 2 * 1024**3
    me = (await api.client.get("/api/v1/auth/me", headers=auth(token))).json()["data"]
    assert me["usage"]["disk_gb"] == 2

    # Shrinking is refused, and so is any hardware change while running.
    response = await api.client.put(f"/api/v1/vms/{vm_id}", json={"disk": 1}, headers=auth(token))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][0]["field"] == "disk"

    await action(api, token, vm_id, "start")
    for change in ({"disk": 3}, {"cpu": 2}, {"memory": 512}):
        response = await api.client.put(f"/api/v1/vms/{vm_id}", json=change, headers=auth(token))
        assert response.status_code == 409, (change, response.text)
        assert response.json()["error"]["code"] == "INVALID_STATE"
    # A description is not hardware: it may change while running.
    response = await api.client.patch(
        f"/api/v1/vms/{vm_id}", json={"description": "grown"}, headers=auth(token)
    )
    assert response.status_code == 200, response.text
    vm = response.json()["data"]
    assert (vm["disk"], vm["description"], vm["status"]) == (2, "grown", "running")
    assert virtual_size(api, vm_id) == 2 * 1024**3

    await wait_console(api, token, vm_id, READY_LINE)
    assert await serial_run(api, vm_id, "cat /sys/block/vda/size") == str(2 * SECTORS_PER_GIB)
    assert str(2 * SECTORS_PER_GIB) == "4194304"
