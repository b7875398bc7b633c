"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis + Hypothesis).

Thousands of generated requests, with and without a valid token: none may answer 5xx, and every
answer must be the documented envelope.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.abuse.conftest import HttpServer

EXAMPLES = int(os.environ.get("VOIDVM_FUZZ_EXAMPLES", "100"))
SKIP = {
    # Logging out would revoke the fuzzer's own token; changing the admin password likewise.
    "POST /api/v1/auth/logout",
    "PUT /api/v1/auth/password",
}
sent = {"count": 0}


def check_envelope(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    assert response.headers.get("x-request-id")
    if response.headers.get("content-type", "").startswith("application/json"):
        body: Any = response.json()
        assert isinstance(body, dict) and isinstance(body.get("success"), bool), body
        assert "timestamp" in body
        if not body["success"]:
            assert set(body["error"]) >= {"code", "message"}, body


def test_fuzz_every_operation(http_server: HttpServer) -> None:
    spec = httpx.get(f"{http_server.base}/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = [op.label for op in operations if op.label not in SKIP]
    assert len(labels) > 30
    with httpx.Client(base_url=http_server.base, timeout=30) as client:
        for operation in operations:
            if operation.label in SKIP:
                continue

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=operation.as_strategy(), authenticated=st.booleans())
            def run(case: Any, authenticated: bool) -> None:
                kwargs = case.as_transport_kwargs(base_url=http_server.base)
                headers = {
                    k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"
                }
                if authenticated:
                    headers["Authorization"] = f"Bearer {http_server.admin_token}"
                body = kwargs.get("json")
                response = client.request(
                    kwargs["method"],
                    kwargs["url"],
                    params=kwargs.get("params"),
                    headers=headers,
                    content=json.dumps(body) if body is not None else kwargs.get("data"),
                )
                sent["count"] += 1
                check_envelope(response)

            try:
                run()
            except Exception as exc:
                pytest.fail(f"{operation.label}: {exc}")
    print(f"fuzz requests sent: {sent['count']}")
    assert sent["count"] >= EXAMPLES * 20
