"""The SDKs' types have exactly the fields of the server's OpenAPI document (no drift).

The TypeScript interfaces of sdk/typescript/src/types.ts are read with the TypeScript compiler
(sdk/typescript/scripts/type-fields.mjs); the Python SDK's typed records are read from their
annotations. Each is compared, by property names, with the component schema the server documents
(src/voidvm_server/api/response_models.py for answers, api/schemas.py for request bodies) or, for
list parameters, with the operation's query parameters.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import voidvm

from tests.conftest import IN_CI, fake_driver_factory, make_settings
from voidvm_server.api.app import create_app

ROOT = Path(__file__).resolve().parents[2]
TS_SDK = ROOT / "sdk/typescript"

# TypeScript interface -> component schema of an answer.
TS_ANSWERS = {
    "VM": "VMPublic",
    "VMPage": "VMList",
    "VMLiveStatus": "VMLiveStatus",
    "VMMetrics": "VMMetrics",
    "ConsoleLog": "ConsoleLog",
    "ConsoleTicket": "ConsoleTicket",
    "User": "UserPublic",
    "Quota": "Quota",
    "Usage": "Usage",
    "UserPage": "UserList",
    "LoginResponse": "LoginData",
    "ApiToken": "ApiTokenPublic",
    "CreatedApiToken": "CreatedApiToken",
    "Image": "ImagePublic",
    "Pagination": "Pagination",
    "AuditLogEntry": "AuditEntryPublic",
    "AuditLogPage": "AuditLogList",
    "RoleInfo": "RoleInfo",
    "PermissionInfo": "PermissionInfo",
    "VersionInfo": "VersionInfo",
    "Envelope": "EmptyEnvelope",
    "ErrorEnvelope": "ErrorEnvelope",
    "ErrorBody": "ErrorBody",
    "FieldError": "FieldError",
    "Operation": "OperationPublic",
    "OperationList": "OperationList",
    "OperationError": "OperationError",
}
# TypeScript interface -> component schema of a request body.
TS_BODIES = {
    "CreateVMRequest": "VMCreateBody",
    "UpdateVMRequest": "VMUpdateBody",
    "VMActionOptions": "VMActionBody",
    "CreateUserRequest": "UserCreate",
    "UpdateUserRequest": "UserUpdate",
    "CreateApiTokenRequest": "ApiTokenCreate",
    "CreateImageRequest": "ImageImport",
}
# TypeScript interface -> operation whose query parameters it holds.
TS_QUERIES = {
    "VMListParams": ("get", "/api/v1/vms"),
    "UserListParams": ("get", "/api/v1/users"),
    "AuditLogParams": ("get", "/api/v1/logs"),
    "DeleteVMOptions": ("delete", "/api/v1/vms/{vm_id}"),
    "OperationListParams": ("get", "/api/v1/operations"),
}
# Python SDK record (voidvm.X) -> component schema of an answer.
PY_ANSWERS = {
    "VM": "VMPublic",
    "Operation": "OperationPublic",
    "VMStatus": "VMLiveStatus",
    "VMMetrics": "VMMetrics",
    "ConsoleLog": "ConsoleLog",
    "User": "UserPublic",
    "LoginResult": "LoginData",
    "ApiToken": "ApiTokenPublic",
    "CreatedApiToken": "CreatedApiToken",
    "Image": "ImagePublic",
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document GET /api/v1/openapi.json serves (building it needs no running app)."""
    app = create_app(make_settings(tmp_path_factory.mktemp("openapi")), driver_factory=fake_driver_factory)
    return app.openapi()


@pytest.fixture(scope="module")
def ts_fields() -> dict[str, list[str]]:
    reason = None
    if shutil.which("node") is None:
        reason = "Node.js is not installed"
    elif not (TS_SDK / "node_modules/typescript").is_dir():
        reason = "sdk/typescript/node_modules is missing (run 'npm ci' there, or 'make sdk-ts')"
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    out = subprocess.run(
        ["node", "scripts/type-fields.mjs", "src/types.ts"],
        cwd=TS_SDK,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    fields: dict[str, list[str]] = json.loads(out.stdout)
    return fields


def schema_fields(spec: dict[str, Any], component: str) -> set[str]:
    schemas = spec["components"]["schemas"]
    assert component in schemas, f"the OpenAPI document has no component {component!r}"
    return set(schemas[component].get("properties", {}))


def query_fields(spec: dict[str, Any], method: str, path: str) -> set[str]:
    parameters = spec["paths"][path][method].get("parameters", [])
    return {p["name"] for p in parameters if p["in"] == "query"}


def drift(sdk: str, name: str, sdk_fields: set[str], server: str, server_fields: set[str]) -> str | None:
    if sdk_fields == server_fields:
        return None
    return (
        f"{sdk} {name} differs from the server's {server}: "
        f"missing in the SDK {sorted(server_fields - sdk_fields)}, "
        f"unknown to the server {sorted(sdk_fields - server_fields)}"
    )


def ts_interface(ts_fields: dict[str, list[str]], name: str) -> set[str]:
    assert name in ts_fields, f"sdk/typescript/src/types.ts declares no interface {name}"
    return set(ts_fields[name])


@pytest.mark.parametrize(("interface", "component"), TS_ANSWERS.items(), ids=list(TS_ANSWERS))
def test_typescript_answer_types_match_the_openapi_document(
    spec: dict[str, Any], ts_fields: dict[str, list[str]], interface: str, component: str
) -> None:
    problem = drift(
        "TypeScript", interface, ts_interface(ts_fields, interface), component, schema_fields(spec, component)
    )
    assert problem is None, problem


@pytest.mark.parametrize(("interface", "component"), TS_BODIES.items(), ids=list(TS_BODIES))
def test_typescript_request_bodies_match_the_openapi_document(
    spec: dict[str, Any], ts_fields: dict[str, list[str]], interface: str, component: str
) -> None:
    problem = drift(
        "TypeScript", interface, ts_interface(ts_fields, interface), component, schema_fields(spec, component)
    )
    assert problem is None, problem


@pytest.mark.parametrize(("interface", "operation"), TS_QUERIES.items(), ids=list(TS_QUERIES))
def test_typescript_list_parameters_match_the_openapi_document(
    spec: dict[str, Any], ts_fields: dict[str, list[str]], interface: str, operation: tuple[str, str]
) -> None:
    method, path = operation
    label = f"{method.upper()} {path} query"
    problem = drift(
        "TypeScript", interface, ts_interface(ts_fields, interface), label, query_fields(spec, *operation)
    )
    assert problem is None, problem


@pytest.mark.parametrize(("record", "component"), PY_ANSWERS.items(), ids=list(PY_ANSWERS))
def test_python_sdk_records_match_the_openapi_document(
    spec: dict[str, Any], record: str, component: str
) -> None:
    cls = getattr(voidvm, record)
    fields: set[str] = set()
    for base in cls.__mro__:
        if base is voidvm.Record:
            break
        fields |= set(inspect.get_annotations(base))
    problem = drift("Python", record, fields, component, schema_fields(spec, component))
    assert problem is None, problem


def test_the_mapped_components_are_the_servers_response_models(spec: dict[str, Any]) -> None:
    """Guards the tables above: every answer component they name is one the routes really use."""
    used = json.dumps(spec["paths"])
    schemas = spec["components"]["schemas"]
    referenced = set()
    pending = [name for name in schemas if f'"#/components/schemas/{name}"' in used]
    while pending:
        name = pending.pop()
        if name in referenced:
            continue
        referenced.add(name)
        body = json.dumps(schemas[name])
        pending += [other for other in schemas if f'"#/components/schemas/{other}"' in body]
    for component in {*TS_ANSWERS.values(), *TS_BODIES.values(), *PY_ANSWERS.values()}:
        assert component in referenced, f"{component} is not used by any operation"
