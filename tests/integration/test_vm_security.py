"""Security with real QEMU: hostile names are refused, user text never reaches QEMU's command
line, a data directory with a comma still works, and users never see each other's VMs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, auth, make_settings
from tests.integration.conftest import (
    TINY_VM,
    action,
    create_vm,
    get_vm,
    kill_qemus,
    qemu_pids,
    serve,
)

pytestmark = pytest.mark.qemu

HOSTILE_NAMES = [
    "a,file=/etc/passwd",
    "../x",
    "x/y",
    "..\\x",
    "vm name",
    "vm;reboot",
    "$(reboot)",
    "`id`",
    "vm\nname",
    "vm\x00",
    "x" * 64,
    "",
    "vmé",
]


def cmdline(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def validation_fields(response: Any) -> set[str]:
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION_ERROR", body
    return {issue["field"] for issue in body["error"]["details"]}


async def test_hostile_names_are_refused(qemu_api: Api, qemu_token: str) -> None:
    for name in HOSTILE_NAMES:
        response = await qemu_api.client.post(
            "/api/v1/vms", json={"name": name, **TINY_VM}, headers=auth(qemu_token)
        )
        assert response.status_code == 400, (name, response.text)
        assert validation_fields(response) == {"name"}, name
    assert qemu_api.container.agent.driver.known_run_dirs() == []
    response = await qemu_api.client.get("/api/v1/vms", headers=auth(qemu_token))
    assert response.json()["data"]["pagination"]["total"] == 0


async def test_hostile_rename_is_refused_and_user_text_never_reaches_qemu(
    qemu_api: Api, qemu_token: str
) -> None:
    api, token = qemu_api, qemu_token
    description = "a,file=/etc/passwd -drive file=/etc/shadow 'quoted' \"dq\" $(id)"
    vm = await create_vm(api, token, "Plain_name-1.x", description=description)
    for name in ("a,file=/etc/passwd", "../x"):
        response = await api.client.put(f"/api/v1/vms/{vm['id']}", json={"name": name}, headers=auth(token))
        assert response.status_code == 400, response.text
        assert validation_fields(response) == {"name"}
    assert (await get_vm(api, token, vm["id"]))["name"] == "Plain_name-1.x"

    await action(api, token, vm["id"], "start")
    [pid] = qemu_pids(vm["id"])
    argv = cmdline(pid)
    for arg in argv:
        assert "Plain_name" not in arg
        assert "passwd" not in arg and "shadow" not in arg and "quoted" not in arg
    assert f"guest={vm['id']},debug-threads=on" in argv


async def test_a_data_dir_with_a_comma_boots(tmp_path: Path, tiny_image: tuple[Path, Path]) -> None:
    """QEMU splits option values on commas: the run directory's paths must be escaped."""
    data_dir = tmp_path / "data,file=x"
    try:
        async with serve(make_settings(data_dir), tiny_image) as api:
            token = await api.login()
            vm_id = (await create_vm(api, token, "comma"))["id"]
            started = await action(api, token, vm_id, "start")
            assert started["data"]["status"] == "running"
            [pid] = qemu_pids(vm_id)
            argv = cmdline(pid)
            escaped = str(data_dir / "vms" / vm_id / "serial.sock").replace(",", ",,")
            assert ",,file=x" in escaped
            assert any(f"path={escaped},server=on" in a for a in argv)
            # QMP works (it lives at an escaped path too) and the files are where VoidVM expects.
            response = await api.client.get(f"/api/v1/vms/{vm_id}/status", headers=auth(token))
            assert response.json()["data"]["qemu_status"] == "running"
            assert (data_dir / "vms" / vm_id / "console.log").exists()
            assert not (tmp_path / "data").exists()
            stopped = await action(api, token, vm_id, "stop", force=True)
            assert stopped["data"]["status"] == "stopped"
    finally:
        kill_qemus(str(data_dir))


async def test_other_users_vms_are_invisible(qemu_api: Api, qemu_token: str) -> None:
    api = qemu_api
    await api.create_user(qemu_token, "alice")
    await api.create_user(qemu_token, "bob")
    alice, bob = await api.login("alice", "password-123"), await api.login("bob", "password-123")
    vm = await create_vm(api, alice, "alices-vm")
    vm_id = vm["id"]
    await action(api, alice, vm_id, "start")
    [pid] = qemu_pids(vm_id)

    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/api/v1/vms/{vm_id}", {}),
        ("PUT", f"/api/v1/vms/{vm_id}", {"json": {"description": "mine now"}}),
        ("PATCH", f"/api/v1/vms/{vm_id}", {"json": {"name": "stolen"}}),
        ("DELETE", f"/api/v1/vms/{vm_id}", {}),
        ("DELETE", f"/api/v1/vms/{vm_id}", {"params": {"force": "true"}}),
        ("GET", f"/api/v1/vms/{vm_id}/status", {}),
        ("GET", f"/api/v1/vms/{vm_id}/metrics", {}),
        ("GET", f"/api/v1/vms/{vm_id}/console/log", {}),
    ]
    calls += [
        ("POST", f"/api/v1/vms/{vm_id}/{name}", {"json": {"force": True}})
        for name in ("start", "stop", "restart", "pause", "resume", "reset")
    ]
    for method, url, extra in calls:
        response = await api.client.request(method, url, headers=auth(bob), **extra)
        assert response.status_code == 404, (method, url, response.text)
        error = response.json()["error"]
        assert error["code"] == "VM_NOT_FOUND", (method, url, error)
        assert vm_id in error["details"]

    # An id that is no VM at all answers exactly the same way (nothing to tell them apart).
    response = await api.client.get("/api/v1/vms/vm-000000000000", headers=auth(bob))
    assert (response.status_code, response.json()["error"]["code"]) == (404, "VM_NOT_FOUND")

    response = await api.client.get("/api/v1/vms", headers=auth(bob))
    assert response.json()["data"]["vms"] == []
    assert response.json()["data"]["pagination"]["total"] == 0
    response = await api.client.get("/api/v1/vms", params={"search": "alices"}, headers=auth(bob))
    assert response.json()["data"]["vms"] == []

    # Nothing happened to it; its owner and an admin still see it.
    owned = await get_vm(api, alice, vm_id)
    assert (owned["name"], owned["description"], owned["status"]) == ("alices-vm", "", "running")
    assert qemu_pids(vm_id) == [pid]
    response = await api.client.get("/api/v1/vms", headers=auth(alice))
    assert [v["id"] for v in response.json()["data"]["vms"]] == [vm_id]
    response = await api.client.get("/api/v1/vms", headers=auth(qemu_token))
    assert vm_id in {v["id"] for v in response.json()["data"]["vms"]}
