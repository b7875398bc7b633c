"""Log lines carry the request id, the user and the VM; JSON lines parse."""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import Api, auth
from voidvm_server.logging_setup import ContextFilter, JsonFormatter


async def test_json_log_lines_carry_request_user_and_vm(
    api: Api, admin_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    vm = (
        await api.client.post(
            "/api/v1/vms",
            json={"name": "logged", "cpu": 1, "memory": 128, "disk": 1},
            headers=auth(admin_token),
        )
    ).json()["data"]
    caplog.handler.addFilter(ContextFilter())
    with caplog.at_level(logging.INFO, logger="voidvm_server.access"):
        await api.client.get(
            f"/api/v1/vms/{vm['id']}", headers={**auth(admin_token), "X-Request-ID": "req-42"}
        )
    record = next(r for r in caplog.records if vm["id"] in r.getMessage())
    line = json.loads(JsonFormatter().format(record))
    assert (line["request_id"], line["user"], line["vm_id"]) == ("req-42", "admin", vm["id"])
    assert line["level"] == "info" and admin_token not in json.dumps(line)
