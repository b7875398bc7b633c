"""Operations: `wait: false` actions and URL imports as rows to read, wait on, list and cancel."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, auth, fake_driver_factory, make_settings, running_api
from voidvm_server.domain.models import ImageFormat, ImageStatus
from voidvm_server.drivers.fake import FakeDriver
from voidvm_server.persistence.operations import OperationRepository
from voidvm_server.persistence.repositories import ImageRepository
from voidvm_server.services.clock import now
from voidvm_server.services.operations import OperationService
from voidvm_server.services.tasks import BackgroundTasks

TINY_VM = {"cpu": 1, "memory": 256, "disk": 1}
IMAGE_BYTES = 4 * 1024 * 1024  # the download reads 1 MiB chunks: progress moves by 25 %


class SlowImageServer:
    """Serves a raw image of IMAGE_BYTES on 127.0.0.1: half at once, the rest once `go` is set."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.half_sent = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(IMAGE_BYTES))
                self.end_headers()
                half = IMAGE_BYTES // 2
                self.wfile.write(b"\0" * half)
                self.wfile.flush()
                outer.half_sent.set()
                if outer.go.wait(30):
                    self.wfile.write(b"\0" * (IMAGE_BYTES - half))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/disk.raw"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.go.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def image_server() -> Iterator[SlowImageServer]:
    server = SlowImageServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def url_api(tmp_path: Path) -> AsyncIterator[Api]:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    settings = make_settings(tmp_path, image_allow_private_urls=True, image_url_imports=True)
    async with running_api(settings, fake_driver_factory, None) as running:
        yield running


async def _vm(api: Api, token: str, name: str = "ops") -> str:
    answer = await api.client.post("/api/v1/vms", json={"name": name, **TINY_VM}, headers=auth(token))
    assert answer.status_code == 201, answer.text
    vm_id: str = answer.json()["data"]["id"]
    return vm_id


async def test_a_start_without_waiting_is_an_operation_that_ends_succeeded(
    api: Api, admin_token: str
) -> None:
    vm_id = await _vm(api, admin_token)
    accepted = await api.client.post(
        f"/api/v1/vms/{vm_id}/start", json={"wait": False}, headers=auth(admin_token)
    )
    assert accepted.status_code == 202
    body = accepted.json()
    op = body["operation"]
    assert body["data"]["id"] == vm_id and body["data"]["status"] == "starting"
    assert accepted.headers["location"] == f"/api/v1/operations/{op['id']}"
    assert op["type"] == "vm.start" and op["resource_type"] == "vm" and op["resource_id"] == vm_id
    assert op["cancellable"] is False

    done = (await api.client.get(f"/api/v1/operations/{op['id']}/wait", headers=auth(admin_token))).json()
    assert done["data"]["status"] == "succeeded", done
    assert done["data"]["progress"] == 100 and done["data"]["finished_at"] is not None
    assert done["data"]["result"] == {"vm_id": vm_id, "status": "running"}
    vm = (await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(admin_token))).json()["data"]
    assert vm["status"] == "running"


async def test_a_failed_background_start_fails_its_operation_with_the_error(
    api: Api, admin_token: str
) -> None:
    vm_id = await _vm(api, admin_token)
    driver = api.container.agent.driver
    assert isinstance(driver, FakeDriver)
    driver.fail_next_start = "QEMU refused the machine"
    accepted = await api.client.post(
        f"/api/v1/vms/{vm_id}/start", json={"wait": False}, headers=auth(admin_token)
    )
    op_url = accepted.headers["location"]
    done = (await api.client.get(f"{op_url}/wait?timeout=10", headers=auth(admin_token))).json()["data"]
    assert done["status"] == "failed"
    assert done["error"] == {"code": "HYPERVISOR_ERROR", "message": "QEMU refused the machine"}
    assert done["result"] is None
    vm = (await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(admin_token))).json()["data"]
    assert vm["status"] == "error"


async def test_users_see_only_their_own_operations(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "alice")
    await api.create_user(admin_token, "bob")
    alice, bob = await api.login("alice", "password-123"), await api.login("bob", "password-123")
    vm_id = await _vm(api, alice, "alices")
    accepted = await api.client.post(f"/api/v1/vms/{vm_id}/start", json={"wait": False}, headers=auth(alice))
    op_id = accepted.json()["operation"]["id"]

    for path in (f"/api/v1/operations/{op_id}", f"/api/v1/operations/{op_id}/wait?timeout=0"):
        refused = await api.client.get(path, headers=auth(bob))
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "OPERATION_NOT_FOUND"
    refused = await api.client.delete(f"/api/v1/operations/{op_id}", headers=auth(bob))
    assert refused.status_code == 404
    bobs = (await api.client.get("/api/v1/operations", headers=auth(bob))).json()["data"]
    assert bobs["operations"] == [] and bobs["pagination"]["total"] == 0
    for token in (alice, admin_token):
        listed = (await api.client.get("/api/v1/operations", headers=auth(token))).json()["data"]
        assert [op["id"] for op in listed["operations"]] == [op_id]
    by_resource = await api.client.get(f"/api/v1/operations?resource_id={vm_id}", headers=auth(alice))
    assert [op["id"] for op in by_resource.json()["data"]["operations"]] == [op_id]
    none = await api.client.get("/api/v1/operations?status=failed", headers=auth(alice))
    assert none.json()["data"]["operations"] == []
    await _settled(api, f"/api/v1/operations/{op_id}", alice)


async def _settled(api: Api, operation: str, token: str) -> None:
    """Let the start end before the app stops. A shutdown that cancels it half-way can stall on
    the database's write lock (a known bug, under investigation): not what these tests are about."""
    done = await api.client.get(f"{operation}/wait?timeout=30", headers=auth(token))
    assert done.status_code == 200 and done.json()["data"]["status"] == "succeeded", done.text


async def test_bad_operation_queries_answer_400(api: Api, admin_token: str) -> None:
    for query in ("status=finished", "limit=0", "page=0"):
        answer = await api.client.get(f"/api/v1/operations?{query}", headers=auth(admin_token))
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "VALIDATION_ERROR", query
    vm_id = await _vm(api, admin_token)
    accepted = await api.client.post(
        f"/api/v1/vms/{vm_id}/start", json={"wait": False}, headers=auth(admin_token)
    )
    too_long = await api.client.get(
        f"{accepted.headers['location']}/wait?timeout=61", headers=auth(admin_token)
    )
    assert too_long.status_code == 400
    missing = await api.client.get("/api/v1/operations/op-000000000000", headers=auth(admin_token))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "OPERATION_NOT_FOUND"
    await _settled(api, accepted.headers["location"], admin_token)


async def test_a_url_import_reports_progress_and_can_be_cancelled(
    url_api: Api, image_server: SlowImageServer
) -> None:
    api, token = url_api, await url_api.login()
    accepted = await api.client.post(
        "/api/v1/images",
        json={"name": "slow", "format": "raw", "url": image_server.url, "wait": False},
        headers=auth(token),
    )
    assert accepted.status_code == 202, accepted.text
    image, op = accepted.json()["data"], accepted.json()["operation"]
    assert image["status"] == "downloading" and op["type"] == "image.import" and op["cancellable"]
    await asyncio.to_thread(image_server.half_sent.wait, 10)

    op_url = accepted.headers["location"]
    for _ in range(100):  # the first half is written in chunks: its progress shows up
        current = (await api.client.get(op_url, headers=auth(token))).json()["data"]
        if (current["progress"] or 0) >= 25:
            break
        await asyncio.sleep(0.05)
    assert current["status"] == "running" and 25 <= current["progress"] <= 50, current
    assert "MiB downloaded" in current["message"]
    still = (await api.client.get(f"{op_url}/wait?timeout=0.2", headers=auth(token))).json()
    assert still["data"]["status"] == "running" and still["message"] == "Operation still running"

    cancelled = await api.client.delete(op_url, headers=auth(token))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["data"]["status"] == "cancelled"
    assert cancelled.json()["data"]["cancellable"] is False
    gone = await api.client.get(f"/api/v1/images/{image['id']}", headers=auth(token))
    assert gone.status_code == 404  # a cancelled import leaves no image and no files
    assert not (api.container.settings.data_dir / "images" / image["id"]).exists()
    again = await api.client.delete(op_url, headers=auth(token))
    assert again.status_code == 409 and again.json()["error"]["code"] == "NOT_CANCELLABLE"


async def test_a_url_import_that_waits_answers_201_and_records_a_succeeded_operation(
    url_api: Api, image_server: SlowImageServer
) -> None:
    api, token = url_api, await url_api.login()
    image_server.go.set()
    answer = await api.client.post(
        "/api/v1/images",
        json={"name": "whole", "format": "raw", "url": image_server.url},
        headers=auth(token),
    )
    assert answer.status_code == 201, answer.text
    image = answer.json()["data"]
    assert image["status"] == "available" and image["virtual_size_bytes"] == IMAGE_BYTES
    ops = (await api.client.get(f"/api/v1/operations?resource_id={image['id']}", headers=auth(token))).json()
    [op] = ops["data"]["operations"]
    assert op["type"] == "image.import" and op["status"] == "succeeded"
    assert op["result"] == {"image_id": image["id"]} and op["progress"] == 100


async def test_an_operation_cut_short_by_a_shutdown_is_failed_at_the_next_start(
    tmp_path: Path, image_server: SlowImageServer
) -> None:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    settings = make_settings(tmp_path, image_allow_private_urls=True, image_url_imports=True)
    async with running_api(settings, fake_driver_factory, None) as api:
        token = await api.login()
        accepted = await api.client.post(
            "/api/v1/images",
            json={"name": "cut", "format": "raw", "url": image_server.url, "wait": False},
            headers=auth(token),
        )
        op_id = accepted.json()["operation"]["id"]
        await asyncio.to_thread(image_server.half_sent.wait, 10)
    # A clean shutdown records it at once; a kill leaves it `running` for the next start to fail.
    async with running_api(settings, fake_driver_factory, None) as api:
        token = await api.login()
        op = (await api.client.get(f"/api/v1/operations/{op_id}", headers=auth(token))).json()["data"]
        assert op["status"] == "failed" and op["error"]["code"] == "INTERRUPTED"
        assert (await api.client.get("/api/v1/images/cut", headers=auth(token))).status_code == 404

        # Begun by a process that is gone (it recorded no live worker), left `running` by a kill.
        gone = OperationService(api.container.db, api.container.events, BackgroundTasks())
        stale = await gone.begin(
            "image.pull", resource_type="image", resource_id="img-000000000000", owner_id="usr-x"
        )
        mine = await api.container.operations.begin(
            "image.pull", resource_type="image", resource_id="img-000000000001", owner_id="usr-x"
        )
        await api.container.operations.recover()  # what a start after a kill -9 does
        after = await api.container.operations._load(stale.id)
        assert after is not None and after.status.value == "failed" and after.error is not None
        assert after.error["code"] == "INTERRUPTED"
        running = await api.container.operations._load(mine.id)  # this worker's own runs on
        assert running is not None and running.status.value == "running"


async def test_an_image_still_importing_cannot_back_a_vm_and_a_cancelled_waiting_import_answers_409(
    url_api: Api, image_server: SlowImageServer
) -> None:
    api, token = url_api, await url_api.login()
    body = {"name": "pending", "format": "raw", "url": image_server.url}
    waiting = asyncio.ensure_future(api.client.post("/api/v1/images", json=body, headers=auth(token)))
    await asyncio.to_thread(image_server.half_sent.wait, 10)
    vm = await api.client.post(
        "/api/v1/vms", json={"name": "too-early", "os": "pending", **TINY_VM}, headers=auth(token)
    )
    assert vm.status_code == 409 and vm.json()["error"]["code"] == "IMAGE_NOT_AVAILABLE", vm.text
    [op] = (await api.client.get("/api/v1/operations?type=image.import", headers=auth(token))).json()["data"][
        "operations"
    ]
    assert (await api.client.delete(f"/api/v1/operations/{op['id']}", headers=auth(token))).status_code == 200
    answer = await waiting
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "OPERATION_CANCELLED", answer.text
    assert (await api.client.get("/api/v1/images/pending", headers=auth(token))).status_code == 404


async def test_a_url_import_a_kill_cut_short_leaves_nothing_after_the_restart(url_api: Api) -> None:
    images = url_api.container.images
    async with url_api.container.db.session() as s:  # what a kill -9 mid-download leaves
        record = images._new_record("killed", ImageFormat.RAW, "http://127.0.0.1:9/disk.raw")
        record.status = ImageStatus.DOWNLOADING
        await ImageRepository(s).add(record)
    partial = images.image_dir(record.id)
    partial.mkdir(parents=True)
    (partial / "disk.raw").write_bytes(b"half")
    await images.recover(at_start=True)  # what the next start does
    assert not partial.exists()
    async with url_api.container.db.session() as s:
        assert await ImageRepository(s).get(record.id) is None


async def test_finished_operations_older_than_the_retention_are_pruned(api: Api) -> None:
    ops = api.container.operations
    fields = {"resource_type": "vm", "resource_id": "vm-000000000001", "owner_id": "usr-x"}
    old, recent, running = [await ops.begin("vm.start", **fields) for _ in range(3)]
    long_ago = now() - timedelta(days=31)
    async with api.container.db.session() as s:
        repo = OperationRepository(s)
        await repo.update_unfinished(old.id, status="succeeded", finished_at=long_ago)
        await repo.update_unfinished(recent.id, status="failed", finished_at=now())
        await repo.update_unfinished(running.id, updated_at=long_ago)  # old, but still running
    assert await ops.prune() == 1
    assert await ops._load(old.id) is None
    assert await ops._load(recent.id) is not None and await ops._load(running.id) is not None
