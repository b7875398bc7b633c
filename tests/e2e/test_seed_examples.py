"""The seed document's examples, run as written against a live server on localhost:3000:
the curl quick start, the JavaScript login snippet, and the Python and TypeScript SDK snippets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ROOT, LiveServer

pytestmark = pytest.mark.qemu


def curl(*args: str) -> dict[str, object]:
    out = subprocess.run(["curl", "-s", *args], check=True, capture_output=True, text=True).stdout
    body: dict[str, object] = json.loads(out)
    return body


def test_seed_curl_quick_start_character_for_character(live_server: LiveServer) -> None:
    login = curl(
        "-X", "POST", "http://localhost:3000/api/v1/auth/login",
        "-H", "Content-Type: application/json",
        "-d", '{"username":"admin","password":"admin123"}',
    )  # fmt: skip
    assert login["success"] is True and isinstance(login["token"], str)
    token = login["token"]
    listed = curl("-X", "GET", "http://localhost:3000/api/v1/vms", "-H", f"Authorization: Bearer {token}")
    assert listed["success"] is True and "vms" in listed["data"]  # type: ignore[operator]
    created = curl(
        "-X", "POST", "http://localhost:3000/api/v1/vms",
        "-H", f"Authorization: Bearer {token}",
        "-H", "Content-Type: application/json",
        "-d", '{\n"name": "test-vm",\n"cpu": 2,\n"memory": 2048,\n"disk": 20,\n"os": "ubuntu20.04"\n}',
    )  # fmt: skip
    assert created["success"] is True, created
    vm = created["data"]
    assert vm["name"] == "test-vm" and vm["os"] == "ubuntu20.04"  # type: ignore[index]
    headers = {"Authorization": f"Bearer {token}"}
    httpx.delete(f"{live_server.base_url}/vms/{vm['id']}?force=true", headers=headers)  # type: ignore[index]


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_seed_javascript_login_snippet_destructures_the_token(live_server: LiveServer) -> None:
    # The seed's fetch uses a page-relative URL; in Node it needs the server's origin.
    script = """
const response = await fetch('http://localhost:3000/api/v1/auth/login', {
method: 'POST',
headers: {
'Content-Type': 'application/json',
},
body: JSON.stringify({
username: 'admin',
password: 'admin123',
}),
})
const { token } = await response.json()
if (typeof token !== 'string' || token.split('.').length !== 3) throw new Error('no token')
console.log('ok')
"""
    out = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_seed_python_sdk_snippet(live_server: LiveServer) -> None:
    env = {**os.environ, "VOIDVM_E2E_URL": live_server.base_url, "VOIDVM_E2E_TOKEN": live_server.token}
    test_file = ROOT / "sdk/python/tests/test_seed_snippet.py"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        env=env, cwd=ROOT / "sdk/python", capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout


@pytest.mark.skipif(shutil.which("npx") is None, reason="Node.js is not installed")
def test_seed_typescript_sdk_snippet_runs_verbatim(live_server: LiveServer, tmp_path: Path) -> None:
    sdk = ROOT / "sdk/typescript"
    if not (sdk / "dist").exists() or not (sdk / "node_modules").exists():
        pytest.fail("build the TypeScript SDK first (make sdk-ts, part of make test)")
    seed = (sdk / "examples/seed.ts").read_text()
    assert "'your-jwt-token'" in seed
    work = sdk / ".e2e"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        (work / "seed.mts").write_text(seed.replace("'your-jwt-token'", json.dumps(live_server.token)))
        tsc = subprocess.run(
            ["npx", "tsc", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022",
             "--skipLibCheck", "--rootDir", str(work), "--outDir", str(work / "out"), str(work / "seed.mts")],
            cwd=sdk, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert tsc.returncode == 0, tsc.stdout + tsc.stderr
        run = subprocess.run(
            ["node", str(work / "out/seed.mjs")], cwd=sdk, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)
    headers = {"Authorization": f"Bearer {live_server.token}"}
    vms = httpx.get(f"{live_server.base_url}/vms?search=my-vm", headers=headers).json()["data"]["vms"]
    started = [v for v in vms if v["name"] == "my-vm"]
    assert started and started[0]["status"] == "running"
    for vm in started:
        httpx.delete(f"{live_server.base_url}/vms/{vm['id']}?force=true", headers=headers, timeout=120)
