"""HTTP load against one URL at a fixed concurrency: wrk (from Debian) or, failing that, asyncio+httpx.

Both are closed loops: `concurrency` connections each send the next request as soon as the last
answer arrives. The server's CPU time over the run is read from /proc, so the CPU cost of one
request can be compared even when the machine is noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.common import percentile

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    tool: str
    concurrency: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # socket errors, timeouts and non-2xx answers
    server_cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / self.requests * 1e6 if self.requests else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "cpu_us_per_request": self.cpu_us_per_request}


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a `serve` is a supervisor, the host agent, API workers)."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*"):
            with contextlib.suppress(OSError):
                tree += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its descendants (QEMU's excepted: a guest's work is not the server's)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            if b"qemu-system" in Path(f"/proc/{member}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return total / CLOCK_TICKS


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, concurrency: int, seconds: float, headers: dict[str, str], pid: int) -> LoadResult:
    argv = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    cpu_before = cpu_seconds(pid)
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60)
    cpu = cpu_seconds(pid) - cpu_before
    text = out.stdout
    if out.returncode != 0 or "Requests/sec" not in text:
        raise RuntimeError(f"wrk failed: {out.stderr or text}")
    dist = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", text, re.M))
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    elapsed = _duration_ms(re.search(r"requests in ([\d.]+\w+),", text).group(1)) / 1000  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return LoadResult(
        "wrk",
        concurrency,
        elapsed,
        requests,
        requests / elapsed,
        _duration_ms(dist["50"]),
        _duration_ms(dist["90"]),
        _duration_ms(dist["99"]),
        errors,
        cpu,
    )


async def _python_load(
    url: str, concurrency: int, seconds: float, headers: dict[str, str]
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=10) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.get(url)
                    if response.status_code >= 300:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def run_python(url: str, concurrency: int, seconds: float, headers: dict[str, str], pid: int) -> LoadResult:
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    latencies, errors = asyncio.run(_python_load(url, concurrency, seconds, headers))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before
    ms = [v * 1000 for v in latencies]
    return LoadResult(
        "python",
        concurrency,
        elapsed,
        len(ms),
        len(ms) / elapsed,
        percentile(ms, 0.5),
        percentile(ms, 0.9),
        percentile(ms, 0.99),
        errors,
        cpu,
    )


def load(url: str, concurrency: int, seconds: float, headers: dict[str, str], pid: int) -> LoadResult:
    if shutil.which("wrk"):
        return run_wrk(url, concurrency, seconds, headers, pid)
    return run_python(url, concurrency, seconds, headers, pid)
