"""The asyncio client shares request building with the blocking one; check its flow."""

from __future__ import annotations

import httpx
import pytest

from voidvm import AsyncVoidVMClient, ConflictError, NotFoundError, RateLimitError, WaitTimeoutError
from voidvm_testkit import FakeAPI, accepted, fail, json_body, ok, operation, vm

BASE = "http://localhost:3000/api/v1"


def page(n: int, pages: int) -> httpx.Response:
    return ok(
        {
            "vms": [vm(f"vm-{n}")],
            "pagination": {"page": n, "limit": 1, "total": pages, "pages": pages},
        }
    )


async def test_seed_flow_async() -> None:
    api = FakeAPI()
    api.on("GET", "/vms", page(1, 2), page(2, 2))
    api.on("POST", "/vms", ok(vm("vm-new"), status=201))
    api.on("POST", "/vms/vm-new/start", ok(vm("vm-new", "running")))

    async with AsyncVoidVMClient(base_url=BASE, token="tok", transport=api.transport) as client:
        vms = await client.vms.list()
        new_vm = await client.vms.create({"name": "my-vm", "cpu": 2, "memory": 2048, "disk": 20})
        started = await client.vms.start(new_vm["id"])

    assert [v.id for v in vms] == ["vm-1", "vm-2"]
    assert started.status == "running"
    assert json_body(api.requests[2]) == {"name": "my-vm", "cpu": 2, "memory": 2048, "disk": 20}
    assert all(r.headers["Authorization"] == "Bearer tok" for r in api.requests)


async def test_async_iter_and_errors() -> None:
    api = FakeAPI()
    api.on("GET", "/vms", page(1, 1))
    api.on("GET", "/vms/nope", fail(404, "VM_NOT_FOUND", "gone", **{"X-Request-ID": "abc"}))
    async with AsyncVoidVMClient(base_url=BASE, token="tok", transport=api.transport) as client:
        assert [v.id async for v in client.vms.iter()] == ["vm-1"]
        with pytest.raises(NotFoundError) as caught:
            await client.vms.get("nope")
    assert caught.value.request_id == "abc"


async def test_async_rate_limit_retry_and_bound() -> None:
    limited = fail(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "0.01"})
    api = FakeAPI().on("GET", "/vms/vm-1", limited, ok(vm("vm-1")))
    async with AsyncVoidVMClient(base_url=BASE, token="t", transport=api.transport) as client:
        assert (await client.vms.get("vm-1")).id == "vm-1"
    assert len(api.requests) == 2

    api = FakeAPI().on("GET", "/vms/vm-1", limited)
    async with AsyncVoidVMClient(
        base_url=BASE, token="t", transport=api.transport, max_retries=1
    ) as client:
        with pytest.raises(RateLimitError):
            await client.vms.get("vm-1")
    assert len(api.requests) == 2


async def test_async_login_and_wait_for() -> None:
    api = FakeAPI()
    api.on("POST", "/auth/login", ok({"token": "jwt", "refresh_token": "r"}))
    api.on("GET", "/vms/vm-1", ok(vm("vm-1", "starting")), ok(vm("vm-1", "running")))
    client = await AsyncVoidVMClient.login(BASE, "admin", "admin123", transport=api.transport)
    try:
        result = await client.vms.wait_for("vm-1", "running", timeout=5, interval=0.001)
    finally:
        await client.aclose()
    assert result.status == "running"
    assert api.requests[-1].headers["Authorization"] == "Bearer jwt"


async def test_failed_login_raises_and_closes() -> None:
    api = FakeAPI().on("POST", "/auth/login", fail(401, "INVALID_CREDENTIALS", "wrong"))
    with pytest.raises(Exception) as caught:
        await AsyncVoidVMClient.login(BASE, "admin", "bad", transport=api.transport)
    assert getattr(caught.value, "code", None) == "INVALID_CREDENTIALS"


async def test_async_operations_wait_list_and_cancel() -> None:
    op_id = "op-00000000000c"
    api = FakeAPI()
    api.on("POST", "/vms/vm-1/restart", accepted(vm("vm-1", "rebooting"), operation(op_id)))
    api.on(
        "GET",
        f"/operations/{op_id}/wait",
        ok(operation(op_id)),
        ok(operation(op_id, "succeeded", result={"vm_id": "vm-1", "status": "running"})),
    )
    api.on(
        "GET",
        "/operations",
        ok(
            {
                "operations": [operation(op_id, "succeeded")],
                "pagination": {"page": 1, "limit": 100, "total": 1, "pages": 1},
            }
        ),
    )
    api.on("DELETE", f"/operations/{op_id}", fail(409, "NOT_CANCELLABLE", "finished"))
    api.on("GET", "/operations/op-00000000000d/wait", ok(operation("op-00000000000d")))
    async with AsyncVoidVMClient(base_url=BASE, token="t", transport=api.transport) as client:
        restarting = await client.vms.restart("vm-1", wait=False)
        done = await client.operations.wait(restarting.operation, timeout=30)
        listed = await client.operations.list(type="vm.restart")
        with pytest.raises(ConflictError):
            await client.operations.cancel(done)
        with pytest.raises(WaitTimeoutError):
            await client.operations.wait("op-00000000000d", timeout=0)

    assert restarting.status == "rebooting" and restarting.operation.id == op_id
    assert done.succeeded and done.result.vm_id == "vm-1"
    polls = [float(r.url.params["timeout"]) for r in api.requests[1:3]]
    assert polls == pytest.approx([30, 30], abs=1)  # at most the time left of the 30 s
    assert [op.id for op in listed] == [op_id]
    assert api.requests[3].url.params["type"] == "vm.restart"
    assert json_body(api.requests[0]) == {"wait": False}
