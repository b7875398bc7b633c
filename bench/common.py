"""Helpers shared by the benchmarks: a real VoidVM server in a subprocess, the machine, statistics.

Every helper that starts something also stops it: servers are terminated, and every QEMU process
whose command line names one of our temporary directories is killed (never by program name, so
other people's VMs on the same host are left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
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
PYTHON = sys.executable
ADMIN = {"username": "admin", "password": "admin123"}
READY_LINE = b"VoidVM tiny guest ready"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the accelerator ----------------------------------------------------------------------------
@functools.cache
def bench_accel() -> str:
    """The accelerator every side of a comparison uses: VOIDVM_ACCEL, else VoidVM's own probe.

    Probing once here (instead of in every server we start) saves up to 8 s per server.
    """
    requested = os.environ.get("VOIDVM_ACCEL", "auto")
    if requested in {"kvm", "tcg"}:
        return requested
    from voidvm_server.drivers.qemu.probe import choose_accel

    with tempfile.TemporaryDirectory(prefix="voidvm-bench-probe-") as tmp:
        return asyncio.run(choose_accel("auto", "qemu-system-x86_64", qemu_version(), Path(tmp)))


@functools.cache
def qemu_version() -> str:
    try:
        out = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return out.stdout.splitlines()[0] if out.stdout else "unavailable"


# -- processes ----------------------------------------------------------------------------------
def qemu_pids_under(path: Path) -> list[int]:
    """Live qemu-system processes whose command line mentions `path` (one of our temp dirs)."""
    needle = str(path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv0 = cmdline.split(b"\0", 1)[0]
        if b"qemu-system" in argv0 and needle in cmdline:
            pids.append(int(entry.name))
    return pids


def kill_qemu_under(path: Path, timeout: float = 10.0) -> int:
    """SIGKILL every QEMU that belongs to `path`; wait until they are gone. Returns how many."""
    pids = qemu_pids_under(path)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        time.sleep(0.02)
    return len(pids)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"nothing answered on {url}")
        time.sleep(0.05)


# -- a real VoidVM server -------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    port: int
    data_dir: Path
    token: str
    process: subprocess.Popen[bytes]

    def client(self, timeout: float = 120) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "voidvm.db"

    def tiny_image(self) -> dict[str, object]:
        with self.client() as client:
            images = client.get("/images").json()["data"]["images"]
        return dict(next(i for i in images if i["name"] == "tiny"))


def server_env(data_dir: Path, port: int, **env: str) -> dict[str, str]:
    return {
        **os.environ,
        "VOIDVM_DATA_DIR": str(data_dir),
        "VOIDVM_HOST": "127.0.0.1",
        "VOIDVM_PORT": str(port),
        "VOIDVM_ACCEL": bench_accel(),
        "VOIDVM_RATE_LIMIT": "1000000/minute",
        "VOIDVM_LOG_LEVEL": "WARNING",
        "VOIDVM_IMAGE_DOWNLOADS": "false",
        **env,
    }


@contextmanager
def voidvm_server(
    data_dir: Path | None = None, argv: list[str] | None = None, **env: str
) -> Iterator[Server]:
    """A real server (uvicorn, SQLite, QEMU) on a free loopback port; stopped with its VMs after.

    `data_dir` keeps the data between two servers (the caller owns and removes it); `argv`
    replaces the `voidvm-server serve` command (the profiling launcher uses it).
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voidvm-bench-")))
        port = free_port()
        server_log = (data_dir / "server.log").open("ab")
        stack.callback(server_log.close)
        process = subprocess.Popen(
            argv or [PYTHON, "-m", "voidvm_server.cli", "serve"],
            env=server_env(data_dir, port, **env),
            cwd=ROOT,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(kill_qemu_under, data_dir)
        stack.callback(stop_process, process)
        url = f"http://127.0.0.1:{port}/api/v1"
        try:
            wait_http(f"{url}/health", process)
        except RuntimeError:
            sys.stderr.write((data_dir / "server.log").read_text(errors="replace")[-4000:])
            raise
        login = httpx.post(f"{url}/auth/login", json=ADMIN, timeout=30)
        if "token" not in login.json():
            raise RuntimeError(f"login failed: {login.status_code} {login.text[:300]}")
        token = login.json()["token"]
        yield Server(url, port, data_dir, token, process)


def tiny_media(server: Server) -> object:
    """The tiny guest's boot media, as the server passes them to QEMU."""
    from voidvm_server.drivers.base import BootMedia
    from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE

    image_dir = server.data_dir / "images" / str(server.tiny_image()["id"])
    return BootMedia(
        kernel=image_dir / "vmlinuz", initrd=image_dir / "initrd.img", kernel_cmdline=TINY_KERNEL_CMDLINE
    )


def wait_for_file_bytes(path: Path, deadline: float, needle: bytes | None = None) -> float:
    """Poll until `path` has a byte (or contains `needle`); return the moment it did."""
    while time.perf_counter() < deadline:
        try:
            if path.stat().st_size > 0 and (needle is None or needle in path.read_bytes()):
                return time.perf_counter()
        except FileNotFoundError:
            pass
        time.sleep(0.0005 if needle is None else 0.05)
    raise TimeoutError(f"nothing appeared in {path}")


# -- memory of a process ----------------------------------------------------------------------------
def smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup in KiB (Rss, Pss, Anonymous, ...)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0])
    return values


def rss_kib(pid: int) -> int:
    return smaps_rollup(pid)["Rss"]


# -- statistics ---------------------------------------------------------------------------------
@dataclass
class Summary:
    median: float
    p10: float
    p90: float
    low: float
    high: float
    n: int

    def ms(self) -> str:
        return f"{self.median * 1000:.1f} ms"

    def spread(self) -> str:
        return f"{self.p10 * 1000:.1f}-{self.p90 * 1000:.1f}"

    def __str__(self) -> str:
        spread = f"p10 {self.p10 * 1000:.1f}, p90 {self.p90 * 1000:.1f}, n={self.n}"
        return f"{self.median * 1000:8.1f} ms  ({spread})"

    def as_dict(self) -> dict[str, float]:
        return {
            "median": self.median,
            "p10": self.p10,
            "p90": self.p90,
            "min": self.low,
            "max": self.high,
            "n": self.n,
        }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(values: list[float]) -> Summary:
    ordered = sorted(values)
    return Summary(
        statistics.median(ordered),
        percentile(ordered, 0.1),
        percentile(ordered, 0.9),
        ordered[0],
        ordered[-1],
        len(ordered),
    )


# -- installing what a benchmark needs --------------------------------------------------------------
def is_root() -> bool:
    return os.geteuid() == 0


def ensure_debian_packages(packages: list[str], binaries: list[str]) -> str | None:
    """Install Debian packages when a binary is missing; None when ready, else why not."""
    if all(shutil.which(b) for b in binaries):
        return None
    if not is_root():
        return f"not root: run 'sudo apt-get install {' '.join(packages)}' first"
    log(f"installing {' '.join(packages)} from Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or not all(shutil.which(b) for b in binaries):
        return f"apt-get install {' '.join(packages)} failed: {result.stderr.strip()[-300:]}"
    return None


def pip_install(dists: list[str]) -> str | None:
    """Install Python packages into this venv; None when done, else why not."""
    log(f"installing {' '.join(dists)} into the venv")
    result = subprocess.run(
        [PYTHON, "-m", "pip", "install", "-q", *dists], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        return f"pip install {' '.join(dists)} failed: {result.stderr.strip()[-300:]}"
    return None


# -- the machine ----------------------------------------------------------------------------------
def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
    libvirt = "not installed"
    if shutil.which("libvirtd"):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(["libvirtd", "--version"], capture_output=True, text=True, timeout=10)
            libvirt = out.stdout.strip() or libvirt
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024**2:.1f} GiB",
        "cpu": cpu,
        "kernel": platform.release(),
        "qemu": qemu_version(),
        "accelerator": bench_accel(),
        "libvirt": libvirt,
        "python": platform.python_version(),
    }


def dump(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)
