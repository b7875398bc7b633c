"""Issue #13, "failures that stay failed": each test is the user's step that used to go wrong.

Catalog pulls fail here by design: the test settings switch image downloads off.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    TCG_SCALE,
    Api,
    auth,
    fake_driver_factory,
    let_tiny_serve_ssh,
    make_settings,
    running_api,
)
from tests.integration.conftest import poll
from voidvm_server.data_dir_lock import DataDirInUseError, DataDirLock
from voidvm_server.drivers.base import VMSpec
from voidvm_server.persistence.repositories import ConfigRepository
from voidvm_server.services.clock import now

BODY = {"cpu": 1, "memory": 512, "disk": 20}
WAIT = 10 * TCG_SCALE


async def vm_of(api: Api, token: str, vm_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    vm: dict[str, Any] = response.json()["data"]
    return vm


async def vm_whose_pull_failed(api: Api, token: str) -> dict[str, Any]:
    """A VM created with a catalog `os` whose download failed: `error`, saying why."""
    created = await api.client.post(
        "/api/v1/vms", json={"name": "focal", "os": "ubuntu20.04", **BODY}, headers=auth(token)
    )
    assert created.status_code == 201, created.text
    vm_id = created.json()["data"]["id"]

    async def failed() -> dict[str, Any] | None:
        vm = await vm_of(api, token, vm_id)
        return vm if vm["status"] == "error" else None

    return await poll(failed, timeout=WAIT, what="the pull to fail")


async def put_config(api: Api, token: str, patch: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await api.client.put("/api/v1/config", json=patch, headers=auth(token))
    body: dict[str, Any] = response.json()
    return response.status_code, body


# -- starting a VM whose image failed to download ------------------------------------------------
async def test_starting_a_vm_whose_image_failed_answers_409_and_keeps_its_reason(
    api: Api, admin_token: str
) -> None:
    vm = await vm_whose_pull_failed(api, admin_token)
    assert "image downloads are disabled" in vm["status_reason"]

    response = await api.client.post(f"/api/v1/vms/{vm['id']}/start", headers=auth(admin_token))

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "IMAGE_NOT_AVAILABLE"
    assert "ubuntu20.04" in error["message"] and "image downloads are disabled" in error["message"]
    assert error["details"]["image_status"] == "error"
    after = await vm_of(api, admin_token, vm["id"])
    assert (after["status"], after["status_reason"]) == ("error", vm["status_reason"])


# -- PUT /config default_image ------------------------------------------------------------------
async def test_a_default_image_in_error_is_refused_and_creates_keep_working(
    api: Api, admin_token: str
) -> None:
    await vm_whose_pull_failed(api, admin_token)  # leaves the image 'ubuntu20.04' in `error`

    status, body = await put_config(api, admin_token, {"default_image": "ubuntu20.04"})

    assert status == 400, body
    assert body["error"]["code"] == "VALIDATION_ERROR"
    [issue] = body["error"]["details"]
    assert issue["field"] == "default_image" and "not available" in issue["reason"]
    config = (await api.client.get("/api/v1/config", headers=auth(admin_token))).json()["data"]
    assert config["default_image"] == "tiny"
    created = await api.client.post("/api/v1/vms", json={"name": "plain", **BODY}, headers=auth(admin_token))
    assert created.status_code == 201 and created.json()["data"]["os"] == "tiny"


async def test_a_default_image_that_does_not_exist_is_refused(api: Api, admin_token: str) -> None:
    status, body = await put_config(api, admin_token, {"default_image": "plan9"})
    assert status == 400 and body["error"]["details"][0]["field"] == "default_image"
    status, body = await put_config(api, admin_token, {"default_image": "busybox"})  # tiny's alias
    assert status == 200 and body["data"]["default_image"] == "busybox"


# -- POST /vms with auto_start ------------------------------------------------------------------
async def test_auto_start_answers_starting_as_stored_and_the_vm_then_runs(
    api: Api, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await let_tiny_serve_ssh(api.container.db)  # so the VM has a port to answer
    driver = api.container.agent.driver
    spawn, go = driver.start, asyncio.Event()

    async def held_start(spec: VMSpec) -> int:  # the start waits until the test has looked
        await go.wait()
        return await spawn(spec)

    monkeypatch.setattr(driver, "start", held_start)
    response = await api.client.post(
        "/api/v1/vms", json={"name": "eager", "auto_start": True, **BODY}, headers=auth(admin_token)
    )

    assert response.status_code == 201, response.text
    answered = response.json()["data"]
    assert answered["status"] == "starting" and answered["ports"]["ssh"]
    stored = await vm_of(api, admin_token, answered["id"])
    assert (stored["status"], stored["ports"]) == ("starting", answered["ports"])
    go.set()

    async def running() -> dict[str, Any] | None:
        vm = await vm_of(api, admin_token, answered["id"])
        return vm if vm["status"] == "running" else None

    started = await poll(running, timeout=WAIT, what="the auto-started VM to run")
    assert started["ports"] == answered["ports"] and driver.is_running(answered["id"])


# -- rate_limits.per_user -----------------------------------------------------------------------
async def requests_until_limited(api: Api, token: str) -> list[int]:
    return [(await api.client.get("/api/v1/vms", headers=auth(token))).status_code for _ in range(3)]


async def test_per_user_limits_are_keyed_by_username_or_user_id(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "alice")
    bob = await api.create_user(admin_token, "bob")
    await api.create_user(admin_token, "carol")

    status, body = await put_config(
        api, admin_token, {"rate_limits": {"per_user": {"alice": "2/minute", bob["id"]: "2/minute"}}}
    )

    assert status == 200, body
    assert body["data"]["rate_limits"]["per_user"] == {"alice": "2/minute", bob["id"]: "2/minute"}
    for name in ("alice", "bob"):
        assert await requests_until_limited(api, await api.login(name, "password-123")) == [200, 200, 429]
    assert await requests_until_limited(api, await api.login("carol", "password-123")) == [200] * 3


async def test_a_per_user_key_that_names_no_user_is_refused(api: Api, admin_token: str) -> None:
    status, body = await put_config(api, admin_token, {"rate_limits": {"per_user": {"nobody": "1/minute"}}})

    assert status == 400, body
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["details"] == [
        {"field": "rate_limits.per_user.nobody", "reason": "no user has this username or id"}
    ]
    config = (await api.client.get("/api/v1/config", headers=auth(admin_token))).json()["data"]
    assert config["rate_limits"]["per_user"] == {}


async def test_a_stored_internal_per_user_key_still_limits_its_user(api: Api, admin_token: str) -> None:
    dave = await api.create_user(admin_token, "dave")
    live = api.container.live
    stored = live.current.model_dump()
    stored["rate_limits"]["per_user"] = {f"user:{dave['id']}": "2/minute"}  # as older versions keyed it
    async with api.container.db.session() as s:
        await ConfigRepository(s).put("live", stored, now())

    await live.load()

    assert live.current.rate_limits.per_user == {dave["id"]: "2/minute"}
    assert await requests_until_limited(api, await api.login("dave", "password-123")) == [200, 200, 429]


# -- the data directory's lock, in one process ---------------------------------------------------
def test_a_second_lock_on_a_data_dir_names_the_holder(tmp_path: Path) -> None:
    with DataDirLock(tmp_path) as first:
        with first:  # one object is re-entrant: the app's lifespan re-takes what `serve` took
            pass
        assert first.held
        with pytest.raises(DataDirInUseError) as refused:
            DataDirLock(tmp_path).acquire()
        assert refused.value.pid == os.getpid() and str(tmp_path.resolve()) in str(refused.value)
    with DataDirLock(tmp_path):  # released: the next one takes it
        pass


async def test_the_app_holds_the_lock_while_it_runs_and_a_restart_takes_it_again(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    for _restart in range(2):
        async with running_api(settings, fake_driver_factory, None):
            with pytest.raises(DataDirInUseError):
                DataDirLock(tmp_path).acquire()
    with DataDirLock(tmp_path):
        pass
