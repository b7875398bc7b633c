"""The VM API's rules, on the FakeDriver: validation, visibility, quotas, states, listing."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Api, auth
from voidvm_server.drivers.fake import FakeDriver

SEED_BODY = {"name": "test-vm", "cpu": 2, "memory": 2048, "disk": 20}


async def create(api: Api, token: str, **body: Any) -> dict[str, Any]:
    response = await api.client.post("/api/v1/vms", json={**SEED_BODY, **body}, headers=auth(token))
    assert response.status_code == 201, response.text
    vm: dict[str, Any] = response.json()["data"]
    return vm


async def test_create_returns_201_with_the_vm(api: Api, admin_token: str) -> None:
    vm = await create(api, admin_token)
    assert vm["id"].startswith("vm-")
    assert (vm["name"], vm["cpu"], vm["memory"], vm["disk"]) == ("test-vm", 2, 2048, 20)
    assert vm["status"] == "stopped" and vm["os"] == "tiny" and vm["owner"] == "admin"


async def test_unknown_os_lists_what_exists(api: Api, admin_token: str) -> None:
    response = await api.client.post(
        "/api/v1/vms", json={**SEED_BODY, "os": "plan9"}, headers=auth(admin_token)
    )
    assert response.status_code == 400
    reason = response.json()["error"]["details"][0]["reason"]
    assert "tiny" in reason and "ubuntu20.04" in reason


async def test_sizes_outside_bounds_name_the_field(api: Api, admin_token: str) -> None:
    response = await api.client.post(
        "/api/v1/vms", json={**SEED_BODY, "cpu": 999, "memory": 8}, headers=auth(admin_token)
    )
    assert response.status_code == 400
    assert {d["field"] for d in response.json()["error"]["details"]} == {"cpu", "memory"}


async def test_hostile_names_are_refused(api: Api, admin_token: str) -> None:
    for name in ["a,file=/etc/passwd", "../x", "x y", "a\nb", "é" * 3, "x" * 64]:
        response = await api.client.post(
            "/api/v1/vms", json={**SEED_BODY, "name": name}, headers=auth(admin_token)
        )
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_duplicate_name_for_same_owner_is_409(api: Api, admin_token: str) -> None:
    await create(api, admin_token)
    again = await api.client.post("/api/v1/vms", json=SEED_BODY, headers=auth(admin_token))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "NAME_CONFLICT"


async def test_missing_vm_is_404_vm_not_found_as_in_the_seed(api: Api, admin_token: str) -> None:
    response = await api.client.get("/api/v1/vms/vm-001", headers=auth(admin_token))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "VM_NOT_FOUND"
    assert error["details"] == "Virtual machine with ID 'vm-001' was not found"


async def test_users_never_see_each_others_vms(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "alice")
    await api.create_user(admin_token, "mallory")
    alice = await api.login("alice", "password-123")
    mallory = await api.login("mallory", "password-123")
    vm = await create(api, alice)
    for method, path in [
        ("GET", f"/api/v1/vms/{vm['id']}"),
        ("PUT", f"/api/v1/vms/{vm['id']}"),
        ("DELETE", f"/api/v1/vms/{vm['id']}"),
        ("POST", f"/api/v1/vms/{vm['id']}/start"),
        ("GET", f"/api/v1/vms/{vm['id']}/metrics"),
        ("GET", f"/api/v1/vms/{vm['id']}/console/log"),
    ]:
        body = {"name": "stolen"} if method == "PUT" else None
        response = await api.client.request(method, path, headers=auth(mallory), json=body)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "VM_NOT_FOUND"
    mine = await api.client.get("/api/v1/vms", headers=auth(mallory))
    assert mine.json()["data"]["vms"] == []
    still = await api.client.get(f"/api/v1/vms/{vm['id']}", headers=auth(alice))
    assert still.json()["data"]["name"] == "test-vm" and still.json()["data"]["status"] == "stopped"
    everyone = await api.client.get("/api/v1/vms?owner=alice", headers=auth(admin_token))
    assert [v["id"] for v in everyone.json()["data"]["vms"]] == [vm["id"]]


async def test_free_user_may_own_five_vms(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "frugal")
    token = await api.login("frugal", "password-123")
    for i in range(5):
        await create(api, token, name=f"vm{i}", cpu=1, memory=256, disk=1)
    sixth = await api.client.post("/api/v1/vms", json={**SEED_BODY, "name": "vm5"}, headers=auth(token))
    assert sixth.status_code == 403
    assert sixth.json()["error"]["code"] == "QUOTA_EXCEEDED"
    vms = (await api.client.get("/api/v1/vms", headers=auth(token))).json()["data"]
    assert vms["pagination"]["total"] == 5
    first = vms["vms"][0]["id"]
    assert (await api.client.delete(f"/api/v1/vms/{first}", headers=auth(token))).status_code == 200
    assert (await api.client.post("/api/v1/vms", json=SEED_BODY, headers=auth(token))).status_code == 201


async def test_lifecycle_and_illegal_transitions(api: Api, admin_token: str) -> None:
    vm = await create(api, admin_token)
    base = f"/api/v1/vms/{vm['id']}"
    headers = auth(admin_token)

    async def act(action: str, **body: Any) -> Any:
        return await api.client.post(f"{base}/{action}", json=body or None, headers=headers)

    stop = await act("stop")
    assert stop.status_code == 409 and stop.json()["error"]["code"] == "VM_NOT_RUNNING"
    started = await act("start")
    assert started.status_code == 200 and started.json()["data"]["status"] == "running"
    again = await act("start")
    assert again.status_code == 409 and again.json()["error"]["code"] == "VM_ALREADY_RUNNING"
    assert again.json()["error"]["details"]["current_status"] == "running"
    busy_delete = await api.client.delete(base, headers=headers)
    assert busy_delete.status_code == 409 and busy_delete.json()["error"]["code"] == "INVALID_STATE"
    assert (await act("pause")).json()["data"]["status"] == "paused"
    assert (await act("resume")).json()["data"]["status"] == "running"
    assert (await act("restart")).json()["data"]["status"] == "running"
    assert (await act("reset")).json()["data"]["status"] == "running"
    grow = await api.client.put(base, json={"disk": 30}, headers=headers)
    assert grow.status_code == 409
    stopped = await act("stop", force=True)
    assert stopped.json()["data"]["status"] == "stopped"
    shrink = await api.client.put(base, json={"disk": 10}, headers=headers)
    assert shrink.status_code == 400
    grown = await api.client.put(base, json={"disk": 30, "description": "bigger"}, headers=headers)
    assert grown.json()["data"]["disk"] == 30 and grown.json()["data"]["description"] == "bigger"
    assert (await api.client.delete(base, headers=headers)).status_code == 200
    assert (await api.client.get(base, headers=headers)).status_code == 404


async def test_wait_false_answers_202(api: Api, admin_token: str) -> None:
    vm = await create(api, admin_token)
    response = await api.client.post(
        f"/api/v1/vms/{vm['id']}/start", json={"wait": False}, headers=auth(admin_token)
    )
    assert response.status_code == 202
    assert response.json()["data"]["status"] == "starting"


async def test_crash_marks_the_vm_error_and_it_can_start_again(api: Api, admin_token: str) -> None:
    vm = await create(api, admin_token)
    base = f"/api/v1/vms/{vm['id']}"
    await api.client.post(f"{base}/start", headers=auth(admin_token))
    driver = api.container.agent.driver
    assert isinstance(driver, FakeDriver)
    driver.crash(vm["id"])
    for _ in range(200):  # the exit is recorded by a background task: give it turns of the loop
        state = (await api.client.get(base, headers=auth(admin_token))).json()["data"]
        if state["status"] == "error":
            break
        await asyncio.sleep(0.01)
    assert state["status"] == "error"
    assert "unexpectedly" in state["status_reason"]
    restarted = await api.client.post(f"{base}/start", headers=auth(admin_token))
    assert restarted.json()["data"]["status"] == "running"


async def test_list_paginates_searches_filters_and_sorts(api: Api, admin_token: str) -> None:
    for name in ["web-1", "web-2", "db-1"]:
        await create(api, admin_token, name=name, cpu=1, memory=128, disk=1, description=f"{name} box")
    headers = auth(admin_token)
    page = (await api.client.get("/api/v1/vms?limit=2&page=2&sort=name", headers=headers)).json()["data"]
    assert page["pagination"] == {"page": 2, "limit": 2, "total": 3, "pages": 2}
    assert [v["name"] for v in page["vms"]] == ["web-2"]
    full = (await api.client.get("/api/v1/vms?limit=2&page=1", headers=headers)).json()["data"]
    assert full["pagination"]["total"] == 3  # a full page: the total is counted
    assert [v["name"] for v in full["vms"]] == ["db-1", "web-2"]  # newest first
    past = (await api.client.get("/api/v1/vms?limit=2&page=5", headers=headers)).json()["data"]
    assert past["vms"] == [] and past["pagination"]["total"] == 3
    found = (await api.client.get("/api/v1/vms?search=web", headers=headers)).json()["data"]
    assert sorted(v["name"] for v in found["vms"]) == ["web-1", "web-2"]
    none = (await api.client.get("/api/v1/vms?status=running", headers=headers)).json()["data"]
    assert none["vms"] == []
    by_name_desc = (await api.client.get("/api/v1/vms?sort=-name", headers=headers)).json()["data"]
    assert [v["name"] for v in by_name_desc["vms"]] == ["web-2", "web-1", "db-1"]
    bad = await api.client.get("/api/v1/vms?sort=password", headers=headers)
    assert bad.status_code == 400
    wildcard = (await api.client.get("/api/v1/vms?search=%25", headers=headers)).json()["data"]
    assert wildcard["vms"] == []


async def test_a_rename_conflict_does_not_grow_the_disk(api: Api, admin_token: str) -> None:
    await create(api, admin_token, name="taken", cpu=1, memory=128, disk=1)
    vm = await create(api, admin_token, name="mine", cpu=1, memory=128, disk=1)
    refused = await api.client.patch(
        f"/api/v1/vms/{vm['id']}", json={"name": "taken", "disk": 5}, headers=auth(admin_token)
    )
    assert refused.status_code == 409
    driver = api.container.agent.driver
    assert isinstance(driver, FakeDriver)
    assert driver.disks[vm["id"]] == 1
    after = (await api.client.get(f"/api/v1/vms/{vm['id']}", headers=auth(admin_token))).json()["data"]
    assert (after["name"], after["disk"]) == ("mine", 1)
