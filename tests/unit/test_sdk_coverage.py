"""Every operation in the server's OpenAPI document has a method in both SDKs (no drift)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from voidvm import VoidVMClient
from voidvm._operations import OPERATIONS, normalize_operation

from tests.conftest import Api

ROOT = Path(__file__).resolve().parents[2]
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def api_operations(spec: dict[str, Any]) -> set[str]:
    return {
        normalize_operation(method, path)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/docs")
        for method in item
        if method in HTTP_METHODS
    }


async def test_every_operation_has_a_python_sdk_method(api: Api) -> None:
    spec = (await api.client.get("/api/v1/openapi.json")).json()
    missing = sorted(api_operations(spec) - set(OPERATIONS))
    assert not missing, f"operations without a Python SDK method: {missing}"
    client = VoidVMClient(base_url="http://127.0.0.1:9/api/v1", token="t")
    for operation, dotted in OPERATIONS.items():
        target: Any = client
        for part in dotted.split("."):
            target = getattr(target, part, None)
        assert callable(target), f"{operation} maps to {dotted}, which does not exist"
    client.close()


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
async def test_every_operation_has_a_typescript_sdk_method(api: Api, tmp_path: Path) -> None:
    spec = (await api.client.get("/api/v1/openapi.json")).json()
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(spec))
    out = subprocess.run(
        ["node", str(ROOT / "sdk/typescript/scripts/check-openapi.mjs"), str(document)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
