"""A real VoidVM server on http://localhost:3000 (the address the seed's examples hardcode)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, qemu_missing_reason

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://localhost:3000/api/v1"


@dataclass
class LiveServer:
    base_url: str
    token: str
    data_dir: Path


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    reason = qemu_missing_reason() or ("port 3000 is in use" if _port_busy(3000) else None)
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    data_dir = tmp_path_factory.mktemp("live")
    env = {**os.environ, "VOIDVM_DATA_DIR": str(data_dir), "VOIDVM_IMAGE_DOWNLOADS": "false",
           "VOIDVM_LOG_LEVEL": "WARNING"}  # fmt: skip
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "voidvm_server.cli", "serve"], env=env, cwd=ROOT, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 180
        while not _healthy():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the server did not start: " + (data_dir / "server.log").read_text()[-2000:])
            time.sleep(0.2)
        token = httpx.post(f"{BASE}/auth/login", json={"username": "admin", "password": "admin123"}).json()[
            "token"
        ]
        yield LiveServer(BASE, token, data_dir)
        _delete_every_vm(token)
    finally:
        process.terminate()
        process.wait(30)
        _kill_leftover_qemu(data_dir)
        log.close()


def _healthy() -> bool:
    try:
        return httpx.get(f"{BASE}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _delete_every_vm(token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    vms = httpx.get(f"{BASE}/vms?limit=100", headers=headers).json()["data"]["vms"]
    for vm in vms:
        httpx.delete(f"{BASE}/vms/{vm['id']}?force=true", headers=headers, timeout=120)


def _kill_leftover_qemu(data_dir: Path) -> None:
    """QEMU outlives the server by design; the test run must not."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(data_dir).encode() in cmdline:
            os.kill(int(proc.name), 9)
