"""The response models of the OpenAPI document describe what the routes really answer.

The routes build their JSON in `api/presenters.py`; `api/response_models.py` only describes it
(referenced through `responses=`). Every success answer of every documented operation is validated
here against the model its route declares for that status, and the models forbid extra fields, so
a field added to (or dropped from) a presenter without the model fails this test.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from tests.conftest import Api, auth
from voidvm_server.api.response_models import (
    AcceptedEnvelope,
    ApiTokenList,
    AuditLogList,
    ConsoleLog,
    ConsoleTicket,
    CreatedApiToken,
    DeletedVM,
    EmptyEnvelope,
    Envelope,
    ErrorEnvelope,
    HealthStatus,
    ImageList,
    ImagePublic,
    LiveConfig,
    LoginEnvelope,
    OperationList,
    OperationPublic,
    PermissionList,
    ReadyStatus,
    RoleList,
    SystemInfo,
    SystemStats,
    UserList,
    UserPublic,
    VersionInfo,
    VMList,
    VMLiveStatus,
    VMMetrics,
    VMPublic,
)

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
# Operations this test cannot drive on the FakeDriver without network or qemu-img. Their answer is
# `image_json`, validated through GET /images and GET /images/{id}.
NOT_EXERCISED = {
    "POST /api/v1/images": "imports probe the file with qemu-img",
    "POST /api/v1/images/upload": "uploads probe the file with qemu-img",
}


class Checker:
    """Validates answers against the model the OpenAPI document declares for them, and records
    which documented operations it saw."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.templates = [
            (re.compile("^" + re.sub(r"\\{[^}/]+\\}", "[^/]+", re.escape(path)) + "$"), path)
            for path in spec["paths"]
        ]
        self.seen: set[str] = set()

    def operation_for(self, response: httpx.Response) -> tuple[str, dict[str, Any]]:
        method, path = response.request.method, response.request.url.path
        for pattern, template in self.templates:
            operation = self.spec["paths"][template].get(method.lower())
            if operation and pattern.match(path):
                return f"{method} {template}", operation
        raise AssertionError(f"{method} {path} is not in the OpenAPI document")

    def __call__(self, response: httpx.Response, model: type[BaseModel], status: int = 200) -> Any:
        assert response.status_code == status, response.text
        label, operation = self.operation_for(response)
        schema = operation["responses"].get(str(status), {}).get("content", {}).get("application/json", {})
        declared = schema.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
        assert declared == component_name(model), f"{label} declares {declared!r} for {status}, not {model}"
        try:
            model.model_validate(response.json())
        except ValidationError as exc:
            pytest.fail(f"{label} ({status}) does not match {model.__name__}:\n{exc}")
        self.seen.add(label)
        return response.json()["data"]

    def error(self, response: httpx.Response, status: int, code: str) -> None:
        assert response.status_code == status, response.text
        body = ErrorEnvelope.model_validate(response.json())
        assert body.error.code == code


def component_name(model: type[BaseModel]) -> str:
    """FastAPI's name for a model in components/schemas (`Envelope[VMPublic]` -> `Envelope_VMPublic_`)."""
    return re.sub(r"[^a-zA-Z0-9.\-_]", "_", model.__name__)


@pytest.fixture
async def check(api: Api) -> Checker:
    return Checker((await api.client.get("/api/v1/openapi.json")).json())


def documented_operations(spec: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/")
        for method in item
        if method in HTTP_METHODS
    }


async def test_every_success_answer_matches_its_declared_model(
    api: Api, admin_token: str, check: Checker
) -> None:
    c, admin = api.client, auth(admin_token)

    # -- auth ------------------------------------------------------------------------------------
    login = check(
        await c.post("/api/v1/auth/login", json={"username": "admin", "password": "admin123"}), LoginEnvelope
    )
    check(await c.post("/api/v1/auth/refresh", json={"refresh_token": login["refresh_token"]}), LoginEnvelope)
    me = check(await c.get("/api/v1/auth/me", headers=admin), Envelope[UserPublic])
    assert me["usage"] == {"vms": 0, "cpus": 0, "memory_mb": 0, "disk_gb": 0}
    created_token = check(
        await c.post("/api/v1/auth/tokens", json={"name": "ci", "expires_in_days": 7}, headers=admin),
        Envelope[CreatedApiToken],
        201,
    )
    check(await c.get("/api/v1/auth/tokens", headers=admin), Envelope[ApiTokenList])
    check(await c.delete(f"/api/v1/auth/tokens/{created_token['id']}", headers=admin), EmptyEnvelope)

    # -- users -----------------------------------------------------------------------------------
    alice = check(
        await c.post(
            "/api/v1/users",
            json={"username": "alice", "password": "password-123", "email": "alice@example.com"},
            headers=admin,
        ),
        Envelope[UserPublic],
        201,
    )
    check(await c.get("/api/v1/users", headers=admin), Envelope[UserList])
    check(await c.get(f"/api/v1/users/{alice['id']}", headers=admin), Envelope[UserPublic])
    check(
        await c.put(f"/api/v1/users/{alice['id']}", json={"quota": {"max_vms": 2}}, headers=admin),
        Envelope[UserPublic],
    )
    alice_token = await api.login("alice", "password-123")
    check(
        await c.put(
            "/api/v1/auth/password",
            json={"current_password": "password-123", "new_password": "password-456"},
            headers=auth(alice_token),
        ),
        EmptyEnvelope,
    )
    check(await c.delete(f"/api/v1/users/{alice['id']}", headers=admin), EmptyEnvelope)
    check(await c.get("/api/v1/roles", headers=admin), Envelope[RoleList])
    check(await c.get("/api/v1/permissions", headers=admin), Envelope[PermissionList])

    # -- images ----------------------------------------------------------------------------------
    kernel = api.container.settings.data_dir / "spare-vmlinuz"
    kernel.write_bytes(b"not a kernel")
    spare = await api.container.images.register_kernel_image(
        "spare", kernel, None, "console=ttyS0", default=False
    )
    images = check(await c.get("/api/v1/images", headers=admin), Envelope[ImageList])["images"]
    assert {i["name"] for i in images} == {"tiny", "spare"}
    check(await c.get(f"/api/v1/images/{spare.id}", headers=admin), Envelope[ImagePublic])
    check(await c.delete(f"/api/v1/images/{spare.id}", headers=admin), EmptyEnvelope)

    # -- VMs -------------------------------------------------------------------------------------
    body = {"name": "models", "cpu": 1, "memory": 256, "disk": 1, "description": "response models"}
    vm = check(await c.post("/api/v1/vms", json=body, headers=admin), Envelope[VMPublic], 201)
    vm_url = f"/api/v1/vms/{vm['id']}"
    check(await c.get("/api/v1/vms", headers=admin), Envelope[VMList])
    check(await c.get(vm_url, headers=admin), Envelope[VMPublic])
    check(await c.put(vm_url, json={"description": "put"}, headers=admin), Envelope[VMPublic])
    check(await c.patch(vm_url, json={"memory": 320}, headers=admin), Envelope[VMPublic])
    check(await c.get(f"{vm_url}/status", headers=admin), Envelope[VMLiveStatus])
    check(await c.get(f"{vm_url}/metrics", headers=admin), Envelope[VMMetrics])  # stopped: no stats
    started = check(await c.post(f"{vm_url}/start", headers=admin), Envelope[VMPublic])
    assert started["owner_id"] == me["id"] and started["ip"]
    check(await c.get(f"{vm_url}/status", headers=admin), Envelope[VMLiveStatus])
    check(await c.get(f"{vm_url}/metrics", headers=admin), Envelope[VMMetrics])
    check(await c.get(f"{vm_url}/console/log", headers=admin), Envelope[ConsoleLog])
    for kind in ("serial", "vnc"):
        ticket = check(
            await c.post(f"{vm_url}/console", json={"type": kind}, headers=admin),
            Envelope[ConsoleTicket],
            201,
        )
        assert ticket["type"] == kind
    for action in ("pause", "resume", "restart", "reset", "stop"):
        check(await c.post(f"{vm_url}/{action}", json={"force": True}, headers=admin), Envelope[VMPublic])
    accepted = await c.post(f"{vm_url}/start", json={"wait": False}, headers=admin)
    check(accepted, AcceptedEnvelope[VMPublic], 202)
    op_url = accepted.headers["location"]
    assert op_url == f"/api/v1/operations/{accepted.json()['operation']['id']}"
    check(await c.get(op_url, headers=admin), Envelope[OperationPublic])
    done = check(await c.get(f"{op_url}/wait?timeout=30", headers=admin), Envelope[OperationPublic])
    assert done["status"] == "succeeded" and done["result"] == {"vm_id": vm["id"], "status": "running"}
    listed = check(await c.get("/api/v1/operations?type=vm.start", headers=admin), Envelope[OperationList])
    assert [op["id"] for op in listed["operations"]] == [done["id"]]
    check.error(await c.delete(op_url, headers=admin), 409, "NOT_CANCELLABLE")
    check.seen.add("DELETE /api/v1/operations/{operation_id}")  # its 200: tests/unit/test_operations.py
    deleted = check(await c.delete(f"{vm_url}?force=true", headers=admin), Envelope[DeletedVM])
    assert deleted == {"id": vm["id"]}

    # -- system ----------------------------------------------------------------------------------
    check(await c.get("/api/v1/health"), Envelope[HealthStatus])
    ready = await c.get("/api/v1/ready")
    if ready.status_code == 503:  # no qemu-img on this machine: the documented 503
        check.error(ready, 503, "SERVICE_UNAVAILABLE")
        check.seen.add("GET /api/v1/ready")
    else:
        check(ready, Envelope[ReadyStatus])
    check(await c.get("/api/v1/system/version", headers=admin), Envelope[VersionInfo])
    check(await c.get("/api/v1/system/info", headers=admin), Envelope[SystemInfo])
    for period in ("1h", "30d"):
        check(await c.get(f"/api/v1/system/stats?period={period}", headers=admin), Envelope[SystemStats])
    config = check(await c.get("/api/v1/config", headers=admin), Envelope[LiveConfig])
    check(
        await c.put("/api/v1/config", json={"default_image": config["default_image"]}, headers=admin),
        Envelope[LiveConfig],
    )
    logs = check(await c.get("/api/v1/logs?limit=500", headers=admin), Envelope[AuditLogList])["logs"]
    assert {entry["result"] for entry in logs} >= {"success"}
    check(await c.post("/api/v1/auth/logout", headers=admin), EmptyEnvelope)

    missed = documented_operations(check.spec) - check.seen - set(NOT_EXERCISED)
    assert not missed, f"operations whose answer this test never validated: {sorted(missed)}"


async def test_system_stats_with_samples_and_failed_audit_entries(
    api: Api, admin_token: str, check: Checker
) -> None:
    monitor = api.container.monitor
    monitor.record(await monitor.sample())
    await api.client.post("/api/v1/auth/login", json={"username": "admin", "password": "wrong"})
    stats = check(
        await api.client.get("/api/v1/system/stats", headers=auth(admin_token)), Envelope[SystemStats]
    )
    assert stats["resources"] and stats["events"].get("auth.login", 0) >= 1
    logs = check(await api.client.get("/api/v1/logs", headers=auth(admin_token)), Envelope[AuditLogList])
    failure = [e for e in logs["logs"] if e["result"] == "failure"]
    assert failure and failure[0]["level"] == "warning" and failure[0]["user_id"] is None


async def test_error_answers_match_the_error_envelope(api: Api, admin_token: str, check: Checker) -> None:
    c, admin = api.client, auth(admin_token)
    check.error(
        await c.post("/api/v1/vms", json={"name": "", "cpu": 0}, headers=admin), 400, "VALIDATION_ERROR"
    )
    check.error(await c.get("/api/v1/vms"), 401, "UNAUTHORIZED")
    user = await api.create_user(admin_token, "bob")
    bob = auth(await api.login("bob", "password-123"))
    check.error(await c.get("/api/v1/users", headers=bob), 403, "FORBIDDEN")
    check.error(await c.get("/api/v1/vms/vm-001", headers=admin), 404, "VM_NOT_FOUND")
    check.error(await c.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    check.error(await c.delete("/api/v1/auth/login"), 405, "METHOD_NOT_ALLOWED")
    again = await c.post("/api/v1/users", json={"username": "bob", "password": "password-123"}, headers=admin)
    check.error(again, 409, "NAME_CONFLICT")
    vm = (
        await c.post("/api/v1/vms", json={"name": "e", "cpu": 1, "memory": 64, "disk": 1}, headers=bob)
    ).json()
    check.error(await c.post(f"/api/v1/vms/{vm['data']['id']}/console", headers=bob), 409, "VM_NOT_RUNNING")
    assert user["usage"]["vms"] == 0


def test_the_models_refuse_a_field_they_do_not_describe() -> None:
    vm = {
        "id": "vm-1", "name": "x", "description": "", "status": "stopped", "status_reason": None,
        "cpu": 1, "memory": 64, "disk": 1, "os": "tiny", "image": "img-1", "owner": "admin",
        "owner_id": "usr-1", "ip": None, "ports": {}, "created_at": "2024-01-01T12:00:00Z",
        "updated_at": "2024-01-01T12:00:00Z", "started_at": None,
    }  # fmt: skip
    envelope = {"success": True, "data": vm, "message": "OK", "timestamp": "2024-01-01T12:00:00Z"}
    Envelope[VMPublic].model_validate(envelope)
    with pytest.raises(ValidationError, match="extra"):
        Envelope[VMPublic].model_validate({**envelope, "data": {**vm, "added_later": 1}})
    with pytest.raises(ValidationError, match="owner_id"):
        Envelope[VMPublic].model_validate(
            {**envelope, "data": {k: v for k, v in vm.items() if k != "owner_id"}}
        )
    with pytest.raises(ValidationError, match="extra"):
        Envelope[VMPublic].model_validate({**envelope, "token": "x"})


async def test_every_api_operation_documents_its_answers(api: Api) -> None:
    spec = (await api.client.get("/api/v1/openapi.json")).json()
    for operation in sorted(documented_operations(spec)):
        method, path = operation.split(" ", 1)
        responses = spec["paths"][path][method.lower()]["responses"]
        success = [s for s in responses if s.startswith("2")]
        assert success, f"{operation} documents no success answer"
        for status in success:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema.get("$ref", "").startswith("#/components/schemas/"), (operation, status, schema)
        for status in ("400", "401", "403", "404", "409", "429", "500"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (operation, status)
        assert "422" not in responses, f"{operation} documents a 422 the server never sends"
