"""API throughput and latency on one server process, next to a bare FastAPI endpoint (the ceiling).

Targets, each under a closed-loop load (wrk, one thread) at rising concurrency:
- ceiling: `bench/ceiling_app.py`, uvicorn + FastAPI returning VoidVM's own answer from memory;
- VoidVM `GET /api/v1/health`: VoidVM's middleware and routing, no auth, no database;
- VoidVM `GET /api/v1/vms`: authenticated (Bearer JWT), 100 VMs in the database, first page of 20;
- the same request on a server whose two reads go through plain sqlite3 instead of SQLAlchemy (the
  `syncread` experiment of bench/whatif.py; `--no-whatif` skips it).
The goal: 1,000 users at 100 requests per minute each (about 1,700 requests per second) with a p99
under 100 ms. Run: .venv/bin/python -m bench.api_throughput [--seconds 10] [--levels 1,8,32,64]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tempfile
from pathlib import Path

import httpx

from bench.common import (
    PYTHON,
    ROOT,
    ensure_debian_packages,
    free_port,
    log,
    stop_process,
    voidvm_server,
    wait_http,
)
from bench.loadgen import LoadResult, load
from bench.report import Section, Table
from bench.seed import seed_vms

TARGET_RPS = 1000 * 100 / 60
TARGET_P99_MS = 100.0
VMS = 100


def run(seconds: float = 10, levels: tuple[int, ...] = (1, 8, 32, 64), whatif: bool = True) -> Section:
    section = Section(
        "api_throughput",
        "API throughput and latency (one server process)",
        f".venv/bin/python -m bench.api_throughput --seconds {seconds:g} "
        f"--levels {','.join(map(str, levels))}",
    )
    problem = ensure_debian_packages(["wrk"], ["wrk"])
    if problem:
        log(f"wrk unavailable ({problem}); using the Python client, which saturates before the server")
    results: dict[str, list[LoadResult]] = {"ceiling": [], "health": [], "vms": []}
    if whatif:
        results.update({name: [] for name in WHATIF})
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(voidvm_server())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voidvm-bench-api-")))
        image_id = str(server.tiny_image()["id"])
        total = seed_vms(server.db_path, VMS, image_id)
        headers = {"Authorization": f"Bearer {server.token}"}
        answer = httpx.get(f"{server.url}/vms", headers=headers).json()
        assert answer["data"]["pagination"]["total"] == total == VMS, answer["data"]["pagination"]
        payload = tmp / "answer.json"
        payload.write_text(httpx.get(f"{server.url}/vms", headers=headers).text)
        port = free_port()
        ceiling = subprocess.Popen(
            [PYTHON, "-m", "bench.ceiling_app", "--port", str(port), "--payload", str(payload)], cwd=ROOT
        )
        stack.callback(stop_process, ceiling)
        ceiling_url = f"http://127.0.0.1:{port}/api/v1"
        wait_http(f"{ceiling_url}/health", ceiling)
        targets = {
            "ceiling": (f"{ceiling_url}/vms", {}, ceiling.pid),
            "health": (f"{server.url}/health", {}, server.process.pid),
            "vms": (f"{server.url}/vms", headers, server.process.pid),
        }
        for name, patches in WHATIF.items() if whatif else ():  # the experiment (bench/whatif.py)
            patched = stack.enter_context(
                voidvm_server(
                    argv=[PYTHON, "-m", "bench.profiled_server"],
                    VOIDVM_BENCH_PROFILE_DIR=str(tmp),
                    VOIDVM_BENCH_WHATIF=patches,
                )
            )
            seed_vms(patched.db_path, VMS, str(patched.tiny_image()["id"]))
            patched_headers = {"Authorization": f"Bearer {patched.token}"}
            targets[name] = (f"{patched.url}/vms", patched_headers, patched.process.pid)
        for url, hdrs, pid in targets.values():  # warm-up
            load(url, 4, 1, hdrs, pid)
        for concurrency in levels:
            for name, (url, hdrs, pid) in targets.items():
                result = load(url, concurrency, seconds, hdrs, pid)
                results[name].append(result)
                log(
                    f"{name:8} c={concurrency:3}: {result.rps:7.0f} req/s, p50 {result.p50_ms:6.1f} ms, "
                    f"p99 {result.p99_ms:6.1f} ms, {result.cpu_us_per_request:6.0f} us CPU/req, "
                    f"{result.errors} errors"
                )
    return report(section, results, seconds)


LABELS = {
    "ceiling": "bare FastAPI (ceiling)",
    "health": "VoidVM GET /health",
    "vms": f"VoidVM GET /vms ({VMS} VMs, auth)",
    "syncread": "same, reads via plain sqlite3 (experiment)",
}
WHATIF = {"syncread": "syncread"}  # result name: VOIDVM_BENCH_WHATIF patches (bench/whatif.py)


def report(section: Section, results: dict[str, list[LoadResult]], seconds: float) -> Section:
    rows = []
    for index, ceiling in enumerate(results["ceiling"]):
        for name in results:
            r = results[name][index]
            rows.append(
                [
                    str(r.concurrency),
                    LABELS[name],
                    f"{r.rps:.0f}",
                    f"{r.p50_ms:.1f}",
                    f"{r.p99_ms:.1f}",
                    f"{r.cpu_us_per_request:.0f}",
                    f"{r.rps / ceiling.rps:.2f}",
                    str(r.errors),
                ]
            )
    tool = results["vms"][0].tool if results["vms"] else "?"
    section.tables.append(
        Table(
            ["conc.", "target", "req/s", "p50 ms", "p99 ms", "server CPU us/req", "vs ceiling", "errors"],
            rows,
            f"{tool}, {seconds:g} s per cell, closed loop on 127.0.0.1; "
            "the load generator shares the 2 cores",
        )
    )
    vms = results["vms"]
    best = max(vms, key=lambda r: r.rps)
    within = [r for r in vms if r.p99_ms < TARGET_P99_MS]
    best_ok = max(within, key=lambda r: r.rps) if within else None
    cpu = min(r.cpu_us_per_request for r in vms)
    ceiling_best = max(results["ceiling"], key=lambda r: r.rps)
    if best_ok and best_ok.rps >= TARGET_RPS:
        verdict = (
            f"The target holds: {best_ok.rps:.0f} req/s at concurrency {best_ok.concurrency} with "
            f"p99 {best_ok.p99_ms:.0f} ms (needed: {TARGET_RPS:.0f} req/s, p99 < {TARGET_P99_MS:.0f} ms)."
        )
    else:
        got = best_ok.rps if best_ok else best.rps
        verdict = (
            f"The target is missed: at most {got:.0f} req/s with p99 under {TARGET_P99_MS:.0f} ms, "
            f"{got / TARGET_RPS:.0%} of the {TARGET_RPS:.0f} req/s that 1,000 users at 100 req/min need."
        )
    section.reading.append(verdict)
    section.reading.append(
        f"Authenticated `GET /vms` peaks at {best.rps:.0f} req/s (concurrency {best.concurrency}), "
        f"{best.rps / ceiling_best.rps:.0%} of the bare FastAPI ceiling ({ceiling_best.rps:.0f} req/s). "
        f"The server spends about {cpu:.0f} us of CPU per request (ceiling: "
        f"{min(r.cpu_us_per_request for r in results['ceiling']):.0f} us), so one core cannot exceed "
        f"about {1e6 / cpu:.0f} req/s whatever the load; past that, latency grows with the queue "
        f"(p99 = concurrency / throughput). See the profile section for where the CPU goes."
    )
    if results.get("syncread"):
        fast = max(results["syncread"], key=lambda r: r.rps)
        fast_cpu = min(r.cpu_us_per_request for r in results["syncread"])
        section.reading.append(
            f"What SQLAlchemy still costs: the shipped server already reads in the event loop "
            f"(`Database.reading()`), and the experiment that sends the same statements through plain "
            f"sqlite3 instead (bench/whatif.py, `syncread`) peaks at {fast.rps:.0f} req/s against "
            f"{best.rps:.0f} ({fast.rps / best.rps:.2f}x), at {fast_cpu:.0f} us of CPU per request "
            f"against {cpu:.0f} us, a difference of {cpu - fast_cpu:.0f} us for the two reads. What "
            f"remains is FastAPI, the middleware, the JWT and the JSON of 20 VMs."
        )
    section.data = {k: [r.as_dict() for r in v] for k, v in results.items()}
    return section.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--levels", default="1,8,32,64")
    parser.add_argument("--no-whatif", action="store_true", help="skip the plain-sqlite3 experiment")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    section = run(args.seconds, tuple(int(x) for x in args.levels.split(",")), not args.no_whatif)
    section.print()
    if not args.no_save:
        section.save()


if __name__ == "__main__":
    main()
