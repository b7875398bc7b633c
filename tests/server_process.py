"""A real `voidvm-server serve` in a child process, for tests that drive it as a user would (curl, the
CLI, the SDKs, README snippets). `spawn_server` waits until /health answers; `ServerProcess.stop` ends
it and kills any QEMU it left behind (QEMU outlives the server by design; the test run must not)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ServerProcess:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def root_url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api/v1"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def login(self, username: str = "admin", password: str = "admin123") -> str:
        answer = httpx.post(f"{self.base_url}/auth/login", json={"username": username, "password": password})
        answer.raise_for_status()
        return str(answer.json()["token"])

    def delete_every_vm(self, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        vms = httpx.get(f"{self.base_url}/vms?limit=100", headers=headers).json()["data"]["vms"]
        for vm in vms:
            httpx.delete(f"{self.base_url}/vms/{vm['id']}?force=true", headers=headers, timeout=120)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        kill_qemu_under(self.data_dir)
        self._log.close()


def spawn_server(
    data_dir: Path, *, port: int | None = None, env: dict[str, str] | None = None, timeout: float = 180
) -> ServerProcess:
    """Start a server on `port` (a free one by default) with its data in `data_dir`."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "VOIDVM_DATA_DIR": str(data_dir),
        "VOIDVM_PORT": str(port),
        "VOIDVM_IMAGE_DOWNLOADS": "false",
        "VOIDVM_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    log_path = data_dir / "server.log"
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "voidvm_server.cli", "serve"], env=full_env, cwd=ROOT, stdout=log, stderr=log
    )
    server = ServerProcess(port, data_dir, process, log_path, log)
    deadline = time.monotonic() + timeout
    while not _healthy(server.base_url):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the server did not start:\n{server.log_tail()}")
        time.sleep(0.2)
    return server


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def kill_qemu_under(data_dir: Path) -> None:
    """SIGKILL every qemu-system whose command line names `data_dir`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(data_dir).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
