"""Helpers shared by the benchmarks: a real VoidVM server in a subprocess, timing statistics."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    data_dir: Path
    token: str
    process: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120)


@contextmanager
def voidvm_server(**env: str) -> Iterator[Server]:
    """A real server (uvicorn, SQLite, QEMU under the configured accelerator) on a free port."""
    with tempfile.TemporaryDirectory(prefix="voidvm-bench-") as tmp:
        port = free_port()
        environ = {
            **os.environ,
            "VOIDVM_DATA_DIR": tmp,
            "VOIDVM_PORT": str(port),
            "VOIDVM_RATE_LIMIT": "1000000/minute",
            "VOIDVM_LOG_LEVEL": "WARNING",
            "VOIDVM_IMAGE_DOWNLOADS": "false",
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "voidvm_server.cli", "serve"], env=environ, cwd=ROOT
        )
        url = f"http://127.0.0.1:{port}/api/v1"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the VoidVM server did not come up")
                time.sleep(0.1)
            token = httpx.post(
                f"{url}/auth/login", json={"username": "admin", "password": "admin123"}
            ).json()["token"]
            yield Server(url, Path(tmp), token, process)
        finally:
            process.terminate()
            process.wait(30)


def wait_for_file_bytes(path: Path, deadline: float, needle: bytes | None = None) -> float:
    """Poll until `path` has a byte (or contains `needle`); return the moment it did."""
    while time.perf_counter() < deadline:
        try:
            if path.stat().st_size > 0 and (needle is None or needle in path.read_bytes()):
                return time.perf_counter()
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    raise TimeoutError(f"nothing appeared in {path}")


@dataclass
class Summary:
    median: float
    p10: float
    p90: float
    n: int

    def __str__(self) -> str:
        spread = f"p10 {self.p10 * 1000:.1f}, p90 {self.p90 * 1000:.1f}, n={self.n}"
        return f"{self.median * 1000:8.1f} ms  ({spread})"


def summarize(values: list[float]) -> Summary:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return Summary(statistics.median(ordered), pick(0.1), pick(0.9), len(ordered))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
