"""Run every benchmark, one subprocess each, bounded in time; then write docs/benchmarks.md.

Each benchmark saves its section to bench/results/<name>.json; the page is rendered from all the
saved sections, so a single benchmark can be re-run (`--only`) without losing the others.
A benchmark that overruns its time limit gets SIGINT (it then stops its servers, VMs and libvirtd
itself), and SIGKILL a minute later if it is still there.
Run: .venv/bin/python -m bench.run_all [--quick] [--only a,b] [--skip a,b] [--render]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from bench.common import PYTHON, ROOT, bench_accel, log
from bench.report import load_sections, write_doc

# name: (arguments for a full run, arguments for --quick, time limit in seconds)
BENCHMARKS: dict[str, tuple[list[str], list[str], int]] = {
    "start_latency": (["--runs", "20"], ["--runs", "3"], 1200),
    "create_latency": (["--count", "100"], ["--count", "20"], 900),
    "api_throughput": (["--seconds", "10"], ["--seconds", "3", "--levels", "1,8,32"], 1500),
    "login_flood": (["--requests", "200"], ["--requests", "50"], 300),
    "density": (["--steps", "5,10,20,40"], ["--steps", "2,4"], 2400),
    "list_scale": (["--vms", "10000", "--requests", "50"], ["--vms", "10000", "--requests", "15"], 900),
    "micro": (["--n", "1000"], ["--n", "200"], 600),
    "profile": ([], ["--quick"], 1200),
}
# The WebSocket benchmarks belong to another engineer; they are run with their own defaults.
OTHERS: dict[str, int] = {"ws_fanout": 1800, "console_rtt": 1200}


def run_one(name: str, args: list[str], limit: int) -> int:
    log(f"=== {name} {' '.join(args)} (at most {limit // 60} min)")
    started = time.monotonic()
    process = subprocess.Popen([PYTHON, "-m", f"bench.{name}", *args], cwd=ROOT, start_new_session=True)
    try:
        code = process.wait(limit)
    except subprocess.TimeoutExpired:
        log(f"{name} overran {limit} s: interrupting it")
        os.killpg(process.pid, signal.SIGINT)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
        raise
    log(f"=== {name} finished with code {code} after {time.monotonic() - started:.0f} s")
    return code


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs and shorter loads (a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--render", action="store_true", help="only rebuild docs/benchmarks.md")
    args = parser.parse_args()
    names = [*BENCHMARKS, *(n for n in OTHERS if (ROOT / "bench" / f"{n}.py").exists())]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    names = [n for n in names if n not in args.skip.split(",")]
    failed = []
    if not args.render:
        os.environ["VOIDVM_ACCEL"] = bench_accel()  # probe once, not in every benchmark (up to 8 s each)
        log(f"accelerator: {os.environ['VOIDVM_ACCEL']}")
        for name in names:
            if name in BENCHMARKS:
                full, quick, limit = BENCHMARKS[name]
                code = run_one(name, quick if args.quick else full, limit)
            else:
                code = run_one(name, [], OTHERS[name])
            if code != 0:
                failed.append(name)
    sections = load_sections()
    path = write_doc(sections)
    log(f"wrote {path.relative_to(ROOT)} from {len(sections)} saved sections")
    if failed:
        log(f"failed: {', '.join(failed)} (their previous results, if any, are still on the page)")
        sys.exit(1)


if __name__ == "__main__":
    main()
