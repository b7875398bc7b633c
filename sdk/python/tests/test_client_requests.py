"""The blocking client against a scripted API: what it sends and what it returns."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from voidvm import (
    VM,
    AsyncVoidVMClient,
    ConflictError,
    Image,
    NotFoundError,
    Operation,
    Page,
    RateLimitError,
    Record,
    ServerError,
    ValidationError,
    VoidVMClient,
    VoidVMError,
    WaitTimeoutError,
)
from voidvm_testkit import FakeAPI, accepted, fail, json_body, ok, operation, vm

BASE = "http://localhost:3000/api/v1"


def make_client(api: FakeAPI, token: str | None = "tok-abc") -> VoidVMClient:
    return VoidVMClient(base_url=BASE, token=token, transport=api.transport)


def test_seed_flow_sends_bearer_token_and_unwraps_envelopes() -> None:
    api = FakeAPI()
    api.on(
        "GET",
        "/vms",
        ok({"vms": [vm("vm-1")], "pagination": {"page": 1, "limit": 100, "total": 1, "pages": 1}}),
    )
    api.on("POST", "/vms", ok(vm("vm-new", name="my-vm"), status=201))
    api.on("POST", "/vms/vm-new/start", ok(vm("vm-new", status="running")))
    client = make_client(api)

    vms = client.vms.list()
    new_vm = client.vms.create({"name": "my-vm", "cpu": 2, "memory": 2048, "disk": 20})
    started = client.vms.start(new_vm["id"])

    assert [v.id for v in vms] == ["vm-1"]
    assert new_vm["id"] == new_vm.id == "vm-new"
    assert started.status == "running"
    assert api.paths() == [
        "GET /api/v1/vms",
        "POST /api/v1/vms",
        "POST /api/v1/vms/vm-new/start",
    ]
    for request in api.requests:
        assert request.headers["Authorization"] == "Bearer tok-abc"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"].startswith("voidvm-python/")
    assert json_body(api.requests[1]) == {"name": "my-vm", "cpu": 2, "memory": 2048, "disk": 20}
    assert api.requests[1].headers["Content-Type"] == "application/json"
    assert json_body(api.requests[2]) == {"wait": True}


def test_results_are_dicts_with_recursive_attribute_access() -> None:
    api = FakeAPI().on("GET", "/vms/vm-1", ok(vm("vm-1", ports={"ssh": 22001}, tags=[{"k": "v"}])))
    result = make_client(api).vms.get("vm-1")

    assert isinstance(result, dict) and isinstance(result, VM)
    assert result.ports.ssh == result["ports"]["ssh"] == 22001
    assert result.tags[0].k == "v"
    assert isinstance(result.ports, Record)
    with pytest.raises(AttributeError):
        _ = result.no_such_field


def test_create_accepts_keywords_and_merges_them_over_a_dict() -> None:
    api = FakeAPI().on("POST", "/vms", ok(vm("vm-2"), status=201))
    client = make_client(api)

    client.vms.create(name="kw", cpu=1, memory=512, disk=5, os="tiny")
    client.vms.create({"name": "d", "cpu": 1, "memory": 512, "disk": 5}, cpu=4, description=None)

    assert json_body(api.requests[0]) == {
        "name": "kw",
        "cpu": 1,
        "memory": 512,
        "disk": 5,
        "os": "tiny",
    }
    assert json_body(api.requests[1]) == {"name": "d", "cpu": 4, "memory": 512, "disk": 5}


def test_list_follows_pagination_until_the_last_page() -> None:
    def page(n: int, pages: int = 3) -> httpx.Response:
        items = [vm(f"vm-{n}-{i}") for i in range(2)]
        return ok({"vms": items, "pagination": {"page": n, "limit": 2, "total": 6, "pages": pages}})

    api = FakeAPI().on("GET", "/vms", page(1), page(2), page(3))
    result = make_client(api).vms.list(status="running", sort="name")

    assert [v.id for v in result] == [f"vm-{p}-{i}" for p in (1, 2, 3) for i in range(2)]
    assert [r.url.params["page"] for r in api.requests] == ["1", "2", "3"]
    assert {r.url.params["limit"] for r in api.requests} == {"100"}
    assert {r.url.params["status"] for r in api.requests} == {"running"}
    assert {r.url.params["sort"] for r in api.requests} == {"name"}
    assert "search" not in api.requests[0].url.params


def test_iter_is_lazy_and_list_page_returns_one_page() -> None:
    first = ok({"vms": [vm("a")], "pagination": {"page": 1, "limit": 1, "total": 2, "pages": 2}})
    api = FakeAPI().on("GET", "/vms", first)
    client = make_client(api)

    iterator = client.vms.iter()
    assert api.requests == []
    assert next(iterator).id == "a"
    assert len(api.requests) == 1

    one = client.vms.list_page(1, 1, search="web")
    assert isinstance(one, Page)
    assert (one.page, one.limit, one.total, one.pages, one.has_next) == (1, 1, 2, 2, True)
    assert api.last.url.params["search"] == "web"


def test_empty_page_ends_paging_even_if_pages_claims_more() -> None:
    empty = ok({"vms": [], "pagination": {"page": 1, "limit": 100, "total": 9, "pages": 9}})
    api = FakeAPI().on("GET", "/vms", empty)
    assert make_client(api).vms.list() == []
    assert len(api.requests) == 1


def test_actions_post_their_options() -> None:
    api = FakeAPI()
    for action in ("stop", "restart", "pause", "resume", "reset"):
        api.on("POST", f"/vms/vm-1/{action}", ok(vm("vm-1"), status=202))
    client = make_client(api)

    client.vms.stop("vm-1", force=True, timeout=5)
    client.vms.restart("vm-1", wait=False)
    client.vms.pause("vm-1")
    client.vms.resume("vm-1")
    client.vms.reset("vm-1")

    assert [json_body(r) for r in api.requests] == [
        {"wait": True, "force": True, "timeout": 5},
        {"wait": False},
        {"wait": True},
        {"wait": True},
        {"wait": True},
    ]


def test_update_delete_status_metrics_and_console_log() -> None:
    api = FakeAPI()
    api.on("PATCH", "/vms/vm-1", ok(vm("vm-1", cpu=4)))
    api.on("DELETE", "/vms/vm-1", ok(None))
    api.on("GET", "/vms/vm-1/status", ok({"id": "vm-1", "status": "running", "pid": 42}))
    api.on(
        "GET",
        "/vms/vm-1/metrics",
        ok({"vm_id": "vm-1", "cpu_percent": 12.5, "memory": {"used_mb": 100}}),
    )
    api.on("GET", "/vms/vm-1/console/log", ok({"log": "login: ", "size": 7, "truncated": False}))
    client = make_client(api)

    assert client.vms.update("vm-1", {"cpu": 4}, name="renamed").cpu == 4
    assert client.vms.delete("vm-1", force=True) is None
    assert client.vms.status("vm-1").pid == 42
    assert (
        client.vms.metrics("vm-1", start="2024-01-01T00:00:00Z", interval="1m").memory.used_mb
        == 100
    )
    assert client.vms.console_log("vm-1", tail=100).log == "login: "

    update, delete, _, metrics, log = api.requests
    assert json_body(update) == {"cpu": 4, "name": "renamed"}
    assert delete.url.params["force"] == "true"
    assert dict(metrics.url.params) == {"from": "2024-01-01T00:00:00Z", "interval": "1m"}
    assert log.url.params["tail"] == "100"


def test_delete_without_force_sends_no_query() -> None:
    api = FakeAPI().on("DELETE", "/vms/vm-1", ok(None))
    make_client(api).vms.delete("vm-1")
    assert api.last.url.query == b""


def test_ids_are_percent_encoded_in_paths() -> None:
    api = FakeAPI().on("GET", "/vms/a/b", ok(vm("a/b")))  # the fake matches decoded paths
    make_client(api).vms.get("a/b")
    assert api.last.url.raw_path == b"/api/v1/vms/a%2Fb"


def test_base_url_trailing_slash_is_ignored() -> None:
    api = FakeAPI().on("GET", "/system/version", ok({"version": "0.1.0", "api_version": "v1"}))
    client = VoidVMClient(base_url=BASE + "/", token="t", transport=api.transport)
    assert client.system.version().api_version == "v1"
    assert api.last.url.path == "/api/v1/system/version"


def test_login_classmethod_posts_credentials_without_a_token_then_uses_it() -> None:
    login = {
        "token": "jwt-1",
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "r-1",
        "user": {"username": "admin"},
    }
    api = FakeAPI()
    api.on(
        "POST",
        "/auth/login",
        lambda _: httpx.Response(200, json={"success": True, "data": login, "token": "jwt-1"}),
    )
    api.on("GET", "/auth/me", ok({"id": "usr-1", "username": "admin", "role": "admin"}))

    client = VoidVMClient.login(BASE, "admin", "admin123", transport=api.transport)
    me = client.auth.me()

    assert "Authorization" not in api.requests[0].headers
    assert json_body(api.requests[0]) == {"username": "admin", "password": "admin123"}
    assert api.requests[1].headers["Authorization"] == "Bearer jwt-1"
    assert client.token == "jwt-1" and client.auth.refresh_token == "r-1"
    assert me.username == "admin"
    assert "jwt-1" not in repr(client)


def test_refresh_logout_password_and_api_tokens() -> None:
    api = FakeAPI()
    api.on("POST", "/auth/refresh", ok({"token": "jwt-2", "refresh_token": "r-2"}))
    api.on("PUT", "/auth/password", ok(None))
    api.on(
        "GET", "/auth/tokens", ok({"tokens": [{"id": "tok-1", "name": "ci", "prefix": "vvm_ab"}]})
    )
    api.on(
        "POST",
        "/auth/tokens",
        ok({"id": "tok-2", "name": "bot", "token": "vvm_secret"}, status=201),
    )
    api.on("DELETE", "/auth/tokens/tok-1", ok(None))
    api.on("POST", "/auth/logout", ok(None))
    client = make_client(api, token="jwt-1")

    client.auth.refresh("r-1")
    assert client.token == "jwt-2"
    client.auth.change_password("old", "new-password")
    assert [t.name for t in client.auth.tokens.list()] == ["ci"]
    assert client.auth.tokens.create("bot", expires_in_days=30).token == "vvm_secret"
    client.auth.tokens.revoke("tok-1")
    client.auth.logout()

    assert json_body(api.requests[0]) == {"refresh_token": "r-1"}
    assert "Authorization" not in api.requests[0].headers
    assert json_body(api.requests[1]) == {"current_password": "old", "new_password": "new-password"}
    assert api.requests[1].headers["Authorization"] == "Bearer jwt-2"
    assert json_body(api.requests[3]) == {"name": "bot", "expires_in_days": 30}
    assert client.token is None


def test_images_resource() -> None:
    image = {"id": "img-1", "name": "tiny", "format": "qcow2", "status": "available"}
    api = FakeAPI()
    api.on("GET", "/images", ok({"images": [image]}))
    api.on("GET", "/images/tiny", ok(image))
    api.on("POST", "/images", ok(image, status=201))
    api.on("POST", "/images/upload", ok(image, status=201))
    api.on("DELETE", "/images/img-1", ok(None))
    client = make_client(api)

    assert client.images.list()[0].format == "qcow2"
    assert client.images.get("tiny").id == "img-1"
    client.images.create(name="deb", format="qcow2", url="https://example.org/deb.qcow2")
    client.images.upload(b"QFI\xfb", name="up", format="qcow2")
    client.images.delete("img-1")

    assert json_body(api.requests[2]) == {
        "name": "deb",
        "format": "qcow2",
        "url": "https://example.org/deb.qcow2",
    }
    upload = api.requests[3]
    assert upload.url.path == "/api/v1/images/upload"
    assert dict(upload.url.params) == {"name": "up", "format": "qcow2"}
    assert upload.headers["Content-Type"] == "application/octet-stream"
    assert upload.content == b"QFI\xfb"


def test_users_resource_pages_and_writes() -> None:
    def page(n: int) -> httpx.Response:
        users = [{"id": f"usr-{n}", "username": f"u{n}"}]
        return ok({"users": users, "pagination": {"page": n, "limit": 1, "total": 2, "pages": 2}})

    api = FakeAPI()
    api.on("GET", "/users", page(1), page(2))
    api.on("POST", "/users", ok({"id": "usr-9", "username": "bob"}, status=201))
    api.on("PUT", "/users/usr-9", ok({"id": "usr-9", "role": "admin"}))
    api.on("GET", "/users/usr-9", ok({"id": "usr-9"}))
    api.on("DELETE", "/users/usr-9", ok(None))
    client = make_client(api)

    assert [u.username for u in client.users.list()] == ["u1", "u2"]
    client.users.create(username="bob", password="pw-123456", quota={"max_vms": 2})
    assert client.users.update("usr-9", role="admin").role == "admin"
    assert client.users.get("usr-9").id == "usr-9"
    client.users.delete("usr-9")

    assert json_body(api.requests[2]) == {
        "username": "bob",
        "password": "pw-123456",
        "quota": {"max_vms": 2},
    }
    assert json_body(api.requests[3]) == {"role": "admin"}


def test_system_resource_paths() -> None:
    api = FakeAPI()
    api.on("GET", "/system/info", ok({"version": "0.1.0", "accelerator": "tcg"}))
    api.on("GET", "/system/stats", ok({"vms": {"running": 1}}))
    api.on("GET", "/config", ok({"limits": {"rate": 100}}))
    api.on("PUT", "/config", ok({"limits": {"rate": 50}}))
    api.on(
        "GET",
        "/logs",
        ok(
            {
                "logs": [{"action": "vm.start"}],
                "pagination": {"page": 2, "limit": 10, "total": 11, "pages": 2},
            }
        ),
    )
    api.on("GET", "/roles", ok({"roles": [{"name": "admin"}]}))
    api.on("GET", "/permissions", ok({"permissions": [{"id": "vm:read"}]}))
    api.on("GET", "/health", ok({"status": "ok"}))
    client = make_client(api)

    assert client.system.info().accelerator == "tcg"
    assert client.system.stats("24h").vms.running == 1
    assert client.system.get_config().limits.rate == 100
    assert client.system.update_config({"limits": {"rate": 50}}).limits.rate == 50
    logs = client.system.logs(page=2, limit=10, level="info")
    assert logs.items[0].action == "vm.start" and not logs.has_next
    assert client.system.roles()[0].name == "admin"
    assert client.system.permissions()[0].id == "vm:read"
    assert client.system.health().status == "ok"

    assert api.requests[1].url.params["period"] == "24h"
    assert json_body(api.requests[3]) == {"limits": {"rate": 50}}
    assert dict(api.requests[4].url.params) == {"page": "2", "limit": "10", "level": "info"}
    assert "Authorization" not in api.requests[7].headers


def test_wait_for_polls_until_the_status_is_reached() -> None:
    api = FakeAPI().on(
        "GET",
        "/vms/vm-1",
        ok(vm("vm-1", "creating")),
        ok(vm("vm-1", "creating")),
        ok(vm("vm-1", "stopped")),
    )
    result = make_client(api).vms.wait_for("vm-1", "stopped", timeout=5, interval=0.001)
    assert result.status == "stopped"
    assert len(api.requests) == 3


def test_upload_streams_a_file_from_a_path_and_is_not_retried(tmp_path: Path) -> None:
    image_file = tmp_path / "disk.qcow2"
    image_file.write_bytes(b"QFI\xfb" + b"\x00" * 1024)
    api = FakeAPI().on(
        "POST", "/images/upload", fail(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "0"})
    )

    with pytest.raises(RateLimitError):
        make_client(api).images.upload(image_file, name="disk", format="qcow2")

    assert len(api.requests) == 1
    assert api.last.url.params["name"] == "disk"
    assert api.last.content == b"QFI\xfb" + b"\x00" * 1024


async def test_async_upload_streams_an_open_file(tmp_path: Path) -> None:
    image_file = tmp_path / "kernel"
    image_file.write_bytes(b"\x7fELF")
    api = FakeAPI().on("POST", "/images/upload", ok({"id": "img-k", "format": "raw"}, status=201))
    async with AsyncVoidVMClient(base_url=BASE, token="t", transport=api.transport) as client:
        with image_file.open("rb") as handle:
            image = await client.images.upload(handle, name="k", format="raw")
    assert image.id == "img-k"
    assert api.last.content == b"\x7fELF"


# -- operations ---------------------------------------------------------------------------------

OP = "op-00000000000a"


def operation_page(*ops: dict[str, object], page: int = 1, pages: int = 1) -> httpx.Response:
    pagination = {"page": page, "limit": 2, "total": 2 * pages, "pages": pages}
    return ok({"operations": list(ops), "pagination": pagination})


def test_an_action_without_waiting_returns_the_vm_with_its_operation_to_wait_on() -> None:
    api = FakeAPI()
    api.on("POST", "/vms/vm-1/start", accepted(vm("vm-1", "starting"), operation(OP)))
    api.on("GET", f"/operations/{OP}/wait", ok(operation(OP, "succeeded", result={"status": "x"})))
    client = make_client(api)

    started = client.vms.start("vm-1", wait=False)
    done = client.operations.wait(started.operation)

    assert isinstance(started, VM) and started.status == "starting"
    assert isinstance(started.operation, Operation) and started["operation"].id == OP
    assert not started.operation.finished
    assert isinstance(done, Operation) and done.finished and done.succeeded
    assert done.result.status == "x"
    assert json_body(api.requests[0]) == {"wait": False}
    assert api.last.url.path == f"/api/v1/operations/{OP}/wait"
    assert float(api.last.url.params["timeout"]) == 30


def test_an_action_that_waited_has_no_operation_key() -> None:
    api = FakeAPI().on("POST", "/vms/vm-1/stop", ok(vm("vm-1", "stopped")))
    stopped = make_client(api).vms.stop("vm-1")
    assert stopped == vm("vm-1", "stopped")
    assert "operation" not in stopped


def test_an_image_url_import_without_waiting_carries_its_operation() -> None:
    image = {"id": "img-00000000000b", "name": "deb", "status": "downloading"}
    pull = operation(OP, type="image.import", resource_id="img-00000000000b", progress=5)
    api = FakeAPI().on("POST", "/images", accepted(image, pull))

    created = make_client(api).images.create(
        name="deb", format="qcow2", url="https://example.org/deb.qcow2", wait=False
    )

    assert isinstance(created, Image) and created.status == "downloading"
    assert created.operation.type == "image.import" and created.operation.progress == 5
    assert created.operation.cancellable is True
    assert json_body(api.last) == {
        "name": "deb",
        "format": "qcow2",
        "url": "https://example.org/deb.qcow2",
        "wait": False,
    }


def test_operations_list_get_and_cancel() -> None:
    api = FakeAPI()
    api.on(
        "GET",
        "/operations",
        operation_page(operation("op-1"), operation("op-2"), pages=2),
        operation_page(operation("op-3"), page=2, pages=2),
    )
    api.on("GET", f"/operations/{OP}", ok(operation(OP, "running", progress=40)))
    api.on("DELETE", f"/operations/{OP}", ok(operation(OP, "cancelled", type="image.pull")))
    client = make_client(api)

    everything = client.operations.list(status="running", type="image.pull", resource_id="img-1")
    one = client.operations.list_page(2, 5)
    fetched = client.operations.get(OP)
    cancelled = client.operations.cancel(fetched)

    assert [op.id for op in everything] == ["op-1", "op-2", "op-3"]
    assert dict(api.requests[0].url.params) == {
        "page": "1",
        "limit": "100",
        "status": "running",
        "type": "image.pull",
        "resource_id": "img-1",
    }
    assert api.requests[1].url.params["page"] == "2"
    assert isinstance(one, Page) and one.items[0].id == "op-3"
    assert dict(api.requests[2].url.params) == {"page": "2", "limit": "5"}
    assert fetched.progress == 40 and not fetched.finished
    assert cancelled.status == "cancelled" and cancelled.finished
    assert f"{api.last.method} {api.last.url.path}" == f"DELETE /api/v1/operations/{OP}"


def test_wait_loops_the_long_poll_and_reports_every_state() -> None:
    api = FakeAPI().on(
        "GET",
        f"/operations/{OP}/wait",
        ok(operation(OP, progress=10)),
        ok(operation(OP, progress=60)),
        ok(operation(OP, "succeeded")),
    )
    seen: list[tuple[str, object]] = []
    start = operation(OP, "running", progress=0)

    done = make_client(api).operations.wait(
        Operation(start), on_progress=lambda op: seen.append((op.status, op.progress))
    )

    assert done.status == "succeeded"
    assert seen == [("running", 0), ("running", 10), ("running", 60), ("succeeded", 100)]
    # With a progress callback, the long polls are short ones.
    assert {float(r.url.params["timeout"]) for r in api.requests} == {2.0}


def test_wait_gives_up_after_the_overall_timeout() -> None:
    api = FakeAPI().on("GET", f"/operations/{OP}/wait", ok(operation(OP, type="image.pull")))

    with pytest.raises(WaitTimeoutError) as caught:
        make_client(api).operations.wait(OP, timeout=0)

    assert len(api.requests) == 1 and float(api.last.url.params["timeout"]) == 0
    assert caught.value.code == "WAIT_TIMEOUT" and isinstance(caught.value, TimeoutError)
    assert caught.value.details == {"operation": OP}
    assert "image.pull operation is still running" in caught.value.message


def test_wait_returns_a_failed_operation_and_raise_for_failure_raises_its_error() -> None:
    failed = operation(OP, "failed", error={"code": "VALIDATION_ERROR", "message": "bad url"})
    api = FakeAPI().on("GET", f"/operations/{OP}/wait", ok(failed))

    done = make_client(api).operations.wait(OP, timeout=60)

    assert done.status == "failed" and done.error.code == "VALIDATION_ERROR"
    with pytest.raises(ValidationError) as caught:
        done.raise_for_failure()
    assert (caught.value.code, caught.value.message) == ("VALIDATION_ERROR", "bad url")
    assert caught.value.details == {"operation": OP}


def test_raise_for_failure_by_status() -> None:
    succeeded = Operation(operation(OP, "succeeded"))
    running = Operation(operation(OP, "running"))
    assert succeeded.raise_for_failure() is succeeded
    assert running.raise_for_failure() is running
    with pytest.raises(VoidVMError) as cancelled:
        Operation(operation(OP, "cancelled", type="image.pull")).raise_for_failure()
    assert type(cancelled.value) is ConflictError and cancelled.value.code == "OPERATION_CANCELLED"
    assert "image.pull operation was cancelled" in cancelled.value.message
    interrupted_op = operation(OP, "failed", error={"code": "INTERRUPTED", "message": "restarted"})
    with pytest.raises(VoidVMError) as interrupted:
        Operation(interrupted_op).raise_for_failure()
    assert type(interrupted.value) is ServerError and interrupted.value.code == "INTERRUPTED"
    unknown = operation(OP, "failed", error={"code": "SOMETHING_NEW", "message": "new"})
    with pytest.raises(VoidVMError) as new:
        Operation(unknown).raise_for_failure()
    assert type(new.value) is VoidVMError and new.value.code == "SOMETHING_NEW"


def test_wait_on_a_finished_operation_sends_nothing() -> None:
    api = FakeAPI()
    done = Operation(operation(OP, "succeeded"))
    assert make_client(api).operations.wait(done) is done
    assert api.requests == []


def test_operation_errors_are_mapped() -> None:
    api = FakeAPI()
    api.on("GET", "/operations/op-missing", fail(404, "OPERATION_NOT_FOUND", "Operation not found"))
    api.on("DELETE", f"/operations/{OP}", fail(409, "NOT_CANCELLABLE", "a vm.start cannot be"))
    client = make_client(api)
    with pytest.raises(NotFoundError) as missing:
        client.operations.get("op-missing")
    with pytest.raises(ConflictError) as refused:
        client.operations.cancel(OP)
    assert missing.value.code == "OPERATION_NOT_FOUND" and missing.value.status == 404
    assert refused.value.code == "NOT_CANCELLABLE" and refused.value.status == 409


def test_operation_ids_are_percent_encoded_and_bad_references_refused() -> None:
    api = FakeAPI().on("GET", "/operations/a/b", ok(operation("a/b")))
    client = make_client(api)
    assert client.operations.get("a/b").id == "a/b"
    assert api.last.url.raw_path == b"/api/v1/operations/a%2Fb"
    with pytest.raises(TypeError):
        client.operations.wait(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.operations.wait(OP, timeout=-1)
