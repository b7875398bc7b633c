"""Error answers become typed exceptions; 429 is retried when asked to."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from voidvm import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
    VoidVMClient,
    VoidVMError,
    WaitTimeoutError,
)
from voidvm._errors import error_class_for
from voidvm_testkit import FakeAPI, fail, ok, vm

BASE = "http://localhost:3000/api/v1"


def client_for(api: FakeAPI, **options: Any) -> VoidVMClient:
    return VoidVMClient(base_url=BASE, token="t", transport=api.transport, **options)


def test_not_found_keeps_code_message_details_status_and_request_id() -> None:
    api = FakeAPI().on(
        "GET",
        "/vms/vm-001",
        fail(404, "VM_NOT_FOUND", "虚拟机不存在", "Virtual machine with ID 'vm-001' was not found"),
    )
    with pytest.raises(NotFoundError) as caught:
        client_for(api).vms.get("vm-001")
    error = caught.value
    assert error.code == "VM_NOT_FOUND"
    assert error.message == "虚拟机不存在"
    assert error.details == "Virtual machine with ID 'vm-001' was not found"
    assert error.status == 404
    assert error.request_id == "req-err"
    assert "VM_NOT_FOUND" in str(error) and "req-err" in str(error)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "VALIDATION_ERROR", ValidationError),
        (400, "BAD_REQUEST", ValidationError),
        (401, "INVALID_TOKEN", AuthenticationError),
        (401, "TOKEN_EXPIRED", AuthenticationError),
        (403, "FORBIDDEN", PermissionDeniedError),
        (403, "QUOTA_EXCEEDED", QuotaExceededError),
        (404, "IMAGE_NOT_FOUND", NotFoundError),
        (409, "VM_ALREADY_RUNNING", ConflictError),
        (409, "NAME_CONFLICT", ConflictError),
        (404, "OPERATION_NOT_FOUND", NotFoundError),
        (409, "NOT_CANCELLABLE", ConflictError),
        (409, "IMAGE_NOT_AVAILABLE", ConflictError),
        (413, "PAYLOAD_TOO_LARGE", ValidationError),
        (429, "RATE_LIMIT_EXCEEDED", RateLimitError),
        (500, "INTERNAL_SERVER_ERROR", ServerError),
        (503, "HYPERVISOR_UNAVAILABLE", ServerError),
        (504, "HYPERVISOR_TIMEOUT", ServerError),
        (405, "METHOD_NOT_ALLOWED", VoidVMError),
    ],
)
def test_status_and_code_pick_the_exception_class(
    status: int, code: str, expected: type[VoidVMError]
) -> None:
    api = FakeAPI().on("POST", "/vms", fail(status, code))
    with pytest.raises(expected) as caught:
        client_for(api, retry_on_rate_limit=False).vms.create(name="x", cpu=1, memory=1, disk=1)
    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.status == status


def test_quota_exceeded_is_also_a_permission_error() -> None:
    api = FakeAPI().on("POST", "/vms", fail(403, "QUOTA_EXCEEDED", "free users may own 5 VMs"))
    with pytest.raises(PermissionDeniedError) as caught:
        client_for(api).vms.create(name="six", cpu=1, memory=512, disk=1)
    assert isinstance(caught.value, QuotaExceededError)


def test_validation_details_are_kept_as_a_list() -> None:
    details = [{"field": "cpu", "reason": "must be between 1 and 16"}]
    api = FakeAPI().on("POST", "/vms", fail(400, "VALIDATION_ERROR", "invalid", details))
    with pytest.raises(ValidationError) as caught:
        client_for(api).vms.create(name="x", cpu=99, memory=1, disk=1)
    assert caught.value.details == details


def test_error_without_envelope_still_maps_by_status() -> None:
    api = FakeAPI().on("GET", "/vms/x", httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ServerError) as caught:
        client_for(api).vms.get("x")
    assert caught.value.code == "HTTP_502"
    assert caught.value.request_id is None


def test_success_false_with_200_is_still_an_error() -> None:
    body = {"success": False, "error": {"code": "INVALID_STATE", "message": "no"}}
    api = FakeAPI().on("POST", "/vms/x/start", httpx.Response(200, json=body))
    with pytest.raises(VoidVMError) as caught:
        client_for(api).vms.start("x")
    assert caught.value.code == "INVALID_STATE"


def test_non_envelope_success_is_reported() -> None:
    api = FakeAPI().on("GET", "/vms/x", httpx.Response(200, json=[1, 2]))
    with pytest.raises(VoidVMError) as caught:
        client_for(api).vms.get("x")
    assert caught.value.code == "BAD_RESPONSE"


def test_connection_failure_is_a_transport_error_with_the_cause_chained() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = VoidVMClient(base_url=BASE, token="t", transport=httpx.MockTransport(refuse))
    with pytest.raises(TransportError) as caught:
        client.vms.list()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.code == "CONNECTION_ERROR"


def test_rate_limit_is_retried_after_retry_after() -> None:
    api = FakeAPI().on(
        "GET",
        "/vms/vm-1",
        fail(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "0.05"}),
        ok(vm("vm-1")),
    )
    started = time.monotonic()
    result = client_for(api).vms.get("vm-1")
    assert result.id == "vm-1"
    assert len(api.requests) == 2
    assert time.monotonic() - started >= 0.05


def test_rate_limit_retries_are_bounded() -> None:
    api = FakeAPI().on("GET", "/vms/vm-1", fail(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "0"}))
    with pytest.raises(RateLimitError) as caught:
        client_for(api, max_retries=2).vms.get("vm-1")
    assert len(api.requests) == 3
    assert caught.value.retry_after == 0.0


def test_rate_limit_is_not_retried_when_disabled() -> None:
    api = FakeAPI().on("GET", "/vms/vm-1", fail(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "7"}))
    with pytest.raises(RateLimitError) as caught:
        client_for(api, retry_on_rate_limit=False).vms.get("vm-1")
    assert len(api.requests) == 1
    assert caught.value.retry_after == 7.0


def test_rate_limit_with_a_long_retry_after_raises_at_once() -> None:
    api = FakeAPI().on(
        "GET", "/vms/vm-1", fail(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "3600"})
    )
    with pytest.raises(RateLimitError):
        client_for(api).vms.get("vm-1")
    assert len(api.requests) == 1


def test_wait_for_times_out_with_a_timeout_error() -> None:
    api = FakeAPI().on("GET", "/vms/vm-1", ok(vm("vm-1", "starting")))
    with pytest.raises(WaitTimeoutError) as caught:
        client_for(api).vms.wait_for("vm-1", "running", timeout=0.05, interval=0.01)
    assert isinstance(caught.value, TimeoutError)
    assert "starting" in caught.value.message


def test_wait_for_fails_fast_when_the_vm_enters_error() -> None:
    api = FakeAPI().on("GET", "/vms/vm-1", ok(vm("vm-1", "error", status_reason="qemu died")))
    with pytest.raises(VoidVMError) as caught:
        client_for(api).vms.wait_for("vm-1", ["running", "paused"], timeout=5, interval=0.01)
    assert caught.value.code == "VM_ERROR"
    assert "qemu died" in caught.value.message


def test_error_class_for_websocket_codes_without_status() -> None:
    assert error_class_for(None, "VM_NOT_FOUND") is NotFoundError
    assert error_class_for(None, "SOMETHING_NEW") is VoidVMError
    # Operation errors (and WebSocket ones) have no HTTP status: the code alone decides.
    assert error_class_for(None, "OPERATION_NOT_FOUND") is NotFoundError
    assert error_class_for(None, "NOT_CANCELLABLE") is ConflictError
    assert error_class_for(None, "IMAGE_NOT_AVAILABLE") is ConflictError
    assert error_class_for(418, "VM_NOT_FOUND") is VoidVMError
