"""The envelope on every answer: errors, unknown routes, bad bodies, size cap, crashes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, auth


def assert_error(body: dict[str, Any], code: str) -> None:
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["timestamp"].endswith("Z")


async def test_unknown_route_is_404_in_the_envelope(api: Api) -> None:
    response = await api.client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert_error(response.json(), "NOT_FOUND")
    assert response.headers["x-request-id"]


async def test_wrong_method_is_405_in_the_envelope(api: Api) -> None:
    response = await api.client.delete("/api/v1/auth/login")
    assert response.status_code == 405
    assert_error(response.json(), "METHOD_NOT_ALLOWED")


async def test_malformed_json_is_400_not_422(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/auth/login", content=b'{"username": "admin",', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert_error(response.json(), "BAD_REQUEST")


async def test_validation_lists_each_bad_field(api: Api, admin_token: str) -> None:
    response = await api.client.post(
        "/api/v1/vms", json={"name": "", "cpu": 0, "memory": "lots"}, headers=auth(admin_token)
    )
    assert response.status_code == 400
    body = response.json()
    assert_error(body, "VALIDATION_ERROR")
    fields = {issue["field"] for issue in body["error"]["details"]}
    assert {"name", "cpu", "memory", "disk"} <= fields


async def test_unknown_fields_on_create_are_refused(api: Api, admin_token: str) -> None:
    body = {"name": "x", "cpu": 1, "memory": 128, "disk": 1, "owner": "someone", "qemu_args": "-x"}
    response = await api.client.post("/api/v1/vms", json=body, headers=auth(admin_token))
    assert response.status_code == 400
    reasons = {i["field"]: i["reason"] for i in response.json()["error"]["details"]}
    assert reasons == {"owner": "unknown field", "qemu_args": "unknown field"}


async def test_huge_body_is_413(api: Api, admin_token: str) -> None:
    blob = "x" * (api.container.settings.max_body_bytes + 10)
    response = await api.client.post(
        "/api/v1/vms", json={"name": "big", "description": blob}, headers=auth(admin_token)
    )
    assert response.status_code == 413
    assert_error(response.json(), "PAYLOAD_TOO_LARGE")


async def test_chunked_huge_body_is_413(api: Api, admin_token: str) -> None:
    chunk = b"x" * 65536
    limit = api.container.settings.max_body_bytes

    async def body() -> Any:
        for _ in range(limit // len(chunk) + 2):
            yield chunk

    response = await api.client.post(
        "/api/v1/vms", content=body(), headers={**auth(admin_token), "content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_unexpected_error_is_500_without_trace_or_paths(
    api: Api, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"secret detail at {api.container.settings.data_dir}")

    monkeypatch.setattr(api.container.vms, "list", explode)
    response = await api.client.get("/api/v1/vms", headers=auth(admin_token))
    assert response.status_code == 500
    assert_error(response.json(), "INTERNAL_SERVER_ERROR")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"]


async def test_client_request_id_is_echoed(api: Api) -> None:
    response = await api.client.get("/api/v1/health", headers={"X-Request-ID": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    hostile = await api.client.get("/api/v1/health", headers={"X-Request-ID": "bad id\n"})
    assert hostile.headers["x-request-id"] != "bad id\n"


async def test_health_and_ready_need_no_token(api: Api) -> None:
    assert (await api.client.get("/api/v1/health")).json()["data"]["status"] == "ok"
    ready = await api.client.get("/api/v1/ready")
    assert ready.status_code == 200
    assert ready.json()["data"]["checks"]["database"] == "ok"


async def test_openapi_and_docs_are_served(api: Api) -> None:
    spec = await api.client.get("/api/v1/openapi.json")
    assert spec.status_code == 200
    assert "/api/v1/vms" in spec.json()["paths"]
    assert (await api.client.get("/api/v1/docs")).status_code == 200
