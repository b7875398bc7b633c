"""Where the server's time goes: pyinstrument per request, py-spy under load.

1. Wall clock per request (pyinstrument, async mode: time a coroutine spends awaiting, on a
   subprocess, a socket or the database thread, is charged to it). The server is started through
   bench/profiled_server.py, which profiles only requests marked with a header. Profiled:
   `POST /vms/{id}/start` (the control-plane figure), `POST /vms` and `GET /vms` (100 VMs).
   Tables: cumulative ms per request of VoidVM's own functions and of the main library calls, and
   the time by package of the innermost frame (where the clock actually ran).
2. CPU under load (py-spy, sampling every thread, `--gil` so that only the thread running Python
   counts): `GET /vms` at concurrency 8 with wrk; the share of samples by package.
The full pyinstrument trees are written to bench/results/profile_<name>.txt.
Profilers slow Python code down (pyinstrument by some 20-40% here), so read shares, not totals.
Run: .venv/bin/python -m bench.profile [--quick]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import PYTHON, ensure_debian_packages, log, pip_install, voidvm_server
from bench.profiled_server import TIMED
from bench.report import RESULTS, Section, Table
from bench.seed import seed_vms

PROFILE_HEADER = "X-Bench-Profile"
TIMERS_HEADER = "X-Bench-Timers"
# Library calls worth naming in the per-request table (besides everything in voidvm_server).
BOUNDARIES = {
    ("sqlalchemy/ext/asyncio/session.py", "AsyncSession.execute"),
    ("sqlalchemy/ext/asyncio/session.py", "AsyncSession.scalar"),
    ("sqlalchemy/ext/asyncio/session.py", "AsyncSession.get"),
    ("sqlalchemy/ext/asyncio/session.py", "AsyncSessionTransaction.__aexit__"),
    ("qemu/qmp/protocol.py", "AsyncProtocol.connect"),
    ("qemu/qmp/qmp_client.py", "QMPClient._negotiate"),
    ("asyncio/subprocess.py", "create_subprocess_exec"),
    ("asyncio/subprocess.py", "Process.wait"),
    ("jwt/api_jwt.py", "PyJWT.decode"),
    ("fastapi/dependencies/utils.py", "solve_dependencies"),
    ("fastapi/routing.py", "serialize_response"),
    ("starlette/responses.py", "JSONResponse.__init__"),
    ("uvicorn/protocols/http/httptools_impl.py", "RequestResponseCycle.send"),
}
PACKAGES = [
    ("[await]", "awaiting (subprocess, socket, DB thread, sleep)"),
    ("aiosqlite/", "aiosqlite (thread hand-off, sqlite3)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("voidvm_server/", "VoidVM code"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn"),
    ("pydantic", "pydantic"),
    ("jwt/", "PyJWT"),
    ("limits/", "limits (rate limiter)"),
    ("qemu/", "qemu.qmp"),
    ("json/", "json"),
    ("asyncio/", "asyncio"),
    ("psutil/", "psutil"),
    ("greenlet", "greenlet"),
    ("logging/", "logging"),
]


def package_of(path: str) -> str:
    for needle, label in PACKAGES:
        if needle in path:
            return label
    return "other (stdlib, C, interpreter)"


def short(path: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# -- pyinstrument sessions ---------------------------------------------------------------------------
def analyse_session(
    path: Path, requests: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], float]:
    """(cumulative ms/request by function, self ms/request by package, total ms/request)."""
    from pyinstrument.session import Session

    root = Session.load(str(path)).root_frame()
    assert root is not None
    cumulative: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()

    def walk(frame: Any, ancestors: frozenset[str], parent_path: str) -> None:
        function = str(frame.function)
        file_path = str(frame.file_path or "") if not frame.is_synthetic else parent_path
        name = short(file_path)
        key = f"{name}:{function}"
        wanted = not frame.is_synthetic and ("voidvm_server/" in name or (name, function) in BOUNDARIES)
        if wanted and key not in ancestors:
            cumulative[key] += frame.time
        children = list(frame.children)
        self_time = frame.time - sum(c.time for c in children)
        label = PACKAGES[0][1] if function == "[await]" else package_of(file_path)
        by_package[label] += max(0.0, self_time)
        for child in children:
            walk(child, ancestors | {key} if wanted else ancestors, file_path)

    walk(root, frozenset(), "")
    per = 1000 / requests
    top = [(k, v * per) for k, v in cumulative.most_common(22)]
    packages = [(k, v * per) for k, v in by_package.most_common() if v * per >= 0.01]
    return top, packages, root.time * per


def analyse_timers(path: Path) -> tuple[list[tuple[str, float, float]], int]:
    """Per phase: (name, median ms per request, calls per request); and the number of requests."""
    records = json.loads(path.read_text())
    names = [n for n in ["request (server side)", *(p for _, p in TIMED)] if any(n in r for r in records)]
    rows = []
    for name in names:
        values = [r.get(name, 0.0) * 1000 for r in records]
        calls = sum(r.get(f"{name} (calls)", 0) for r in records) / len(records)
        rows.append((name, statistics.median(values), calls))
    return rows, len(records)


def render_text(path: Path, out: Path) -> None:
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    renderer = ConsoleRenderer(unicode=True, color=False, show_all=False, time="seconds", short_mode=False)
    out.write_text(renderer.render(Session.load(str(path))))


# -- py-spy under load ---------------------------------------------------------------------------------
def pyspy_packages(raw: Path) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed stacks: share of samples by package of the innermost frame, and the
    inclusive share of VoidVM's own functions."""
    self_count: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for frame in stack.split(";"):
            match = re.match(r"(.*) \((.*?):\d+\)$", frame)
            frames.append((match.group(1), match.group(2)) if match else (frame, ""))
        self_count[package_of(frames[-1][1])] += count
        for key in {f"{short(p)}:{f}" for f, p in frames if "voidvm_server/" in p}:
            inclusive[key] += count
    if not total:
        return [], []
    return (
        [(k, 100 * v / total) for k, v in self_count.most_common()],
        [(k, 100 * v / total) for k, v in inclusive.most_common(15)],
    )


def pyspy_binary() -> str | None:
    return shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")


def ensure_profilers() -> str | None:
    missing = [] if pyspy_binary() else ["py-spy"]
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        missing.append("pyinstrument")
    return pip_install(missing) if missing else None


def run(quick: bool = False) -> Section:
    section = Section(
        "profile",
        "Profiles: where VoidVM's time goes",
        ".venv/bin/python -m bench.profile" + (" --quick" if quick else ""),
    )
    problem = ensure_profilers()
    if problem:
        section.reading.append(f"Profiling skipped: {problem}")
        return section.finish()
    ensure_debian_packages(["wrk"], ["wrk"])
    timer_n = (
        {"get_vms": 100, "start": 5, "create": 10} if quick else {"get_vms": 300, "start": 20, "create": 40}
    )
    profile_n = (
        {"get_vms": 50, "start": 3, "create": 5} if quick else {"get_vms": 150, "start": 8, "create": 15}
    )
    client_ms: dict[str, list[float]] = {}
    spy: tuple[list[tuple[str, float]], list[tuple[str, float]]] = ([], [])
    with tempfile.TemporaryDirectory(prefix="voidvm-bench-profile-") as out_dir:
        out = Path(out_dir)
        argv = [PYTHON, "-m", "bench.profiled_server"]
        with voidvm_server(argv=argv, VOIDVM_BENCH_PROFILE_DIR=str(out)) as server, server.client() as client:
            seed_vms(server.db_path, 100, str(server.tiny_image()["id"]))
            body = {"name": "prof", "cpu": 1, "memory": 256, "disk": 1}
            vm_id = client.post("/vms", json=body).json()["data"]["id"]
            for _ in range(20):  # warm-up
                client.get("/vms")
            client.post(f"/vms/{vm_id}/start")
            client.post(f"/vms/{vm_id}/stop", json={"force": True})
            created = 0
            for header, n in ((TIMERS_HEADER, timer_n), (PROFILE_HEADER, profile_n)):
                for _ in range(n["get_vms"]):
                    started = time.perf_counter()
                    client.get("/vms", headers={header: "get_vms"})
                    client_ms.setdefault(f"{header}:get_vms", []).append(time.perf_counter() - started)
                for _ in range(n["start"]):
                    started = time.perf_counter()
                    response = client.post(f"/vms/{vm_id}/start", headers={header: "start"})
                    client_ms.setdefault(f"{header}:start", []).append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text
                    client.post(f"/vms/{vm_id}/stop", json={"force": True})
                for _ in range(n["create"]):
                    body = {"name": f"prof-create-{created}", "cpu": 1, "memory": 128, "disk": 1}
                    created += 1
                    started = time.perf_counter()
                    response = client.post("/vms", json=body, headers={header: "create"})
                    client_ms.setdefault(f"{header}:create", []).append(time.perf_counter() - started)
                    assert response.status_code == 201, response.text
            answer = httpx.post(server.url.removesuffix("/api/v1") + "/__bench/profile", timeout=120).text
            log(f"measured requests: {answer}")
            spy = pyspy_under_load(server.url, server.token, server.process.pid, out, 4 if quick else 10)
        RESULTS.mkdir(exist_ok=True)
        titles = {"start": "POST /vms/{id}/start", "create": "POST /vms", "get_vms": "GET /vms (100 VMs)"}
        for label, title in titles.items():
            timers = out / f"{label}.timers.json"
            if timers.exists():
                rows, n = analyse_timers(timers)
                seen = statistics.median(client_ms[f"{TIMERS_HEADER}:{label}"]) * 1000
                section.tables.append(
                    Table(
                        ["phase (inclusive; nested phases are part of their parent)", "median ms", "calls"],
                        [[k, f"{v:.2f}", f"{c:g}" if c else ""] for k, v, c in rows],
                        f"{title}: phase timers over {n} requests (client saw {seen:.1f} ms at the median)",
                    )
                )
                section.data[f"{label}_timers"] = {"rows": rows, "client_median_ms": seen}
        for label, title in titles.items():
            path = out / f"{label}.pyisession"
            if not path.exists():
                continue
            render_text(path, RESULTS / f"profile_{label}.txt")
            top, packages, total = analyse_session(path, profile_n[label])
            section.tables.append(
                Table(
                    ["function (cumulative)", "ms/request"],
                    [[k, f"{v:.2f}"] for k, v in top],
                    f"{title}: {total:.1f} ms per request under pyinstrument ({profile_n[label]} "
                    f"requests); VoidVM's functions and the main library calls",
                )
            )
            section.tables.append(
                Table(
                    ["where the clock ran (innermost frame)", "ms/request"],
                    [[k, f"{v:.2f}"] for k, v in packages],
                    f"{title}: time by package (pyinstrument)",
                )
            )
            section.data[label] = {"total_ms": total, "top": top, "packages": packages}
    shares, inclusive = spy
    if shares:
        section.tables.append(
            Table(
                ["package (innermost frame)", "% of GIL samples"],
                [[k, f"{v:.1f}"] for k, v in shares],
                "GET /vms at concurrency 8 (wrk), py-spy --gil: CPU by package",
            )
        )
        section.tables.append(
            Table(
                ["VoidVM function (inclusive)", "% of GIL samples"],
                [[k, f"{v:.1f}"] for k, v in inclusive],
                "GET /vms at concurrency 8: VoidVM's functions",
            )
        )
        section.data["pyspy"] = {"shares": shares, "inclusive": inclusive}
    section.reading.append(
        "The full trees are in bench/results/profile_start.txt, profile_create.txt and "
        "profile_get_vms.txt; the analysis of these numbers is in the hand-written section below."
    )
    return section.finish()


def pyspy_under_load(
    url: str, token: str, pid: int, out: Path, seconds: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    pyspy = pyspy_binary()
    if not pyspy or not shutil.which("wrk"):
        log("py-spy or wrk missing: no CPU profile under load")
        return [], []
    raw = out / "pyspy.txt"
    wrk = subprocess.Popen(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            "8",
            "-d",
            f"{seconds + 3}s",
            "-H",
            f"Authorization: Bearer {token}",
            f"{url}/vms",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        result = subprocess.run(
            [
                pyspy,
                "record",
                "--gil",
                "--nonblocking",
                "-r",
                "250",
                "-d",
                str(seconds),
                "--format",
                "raw",
                "-o",
                str(raw),
                "--pid",
                str(pid),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        if result.returncode != 0:
            log(f"py-spy failed: {result.stderr.strip()[-300:]}")
            return [], []
    finally:
        wrk.wait(seconds + 30)
    return pyspy_packages(raw)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    section = run(args.quick)
    section.print()
    if not args.no_save:
        section.save()
    sys.exit(0)


if __name__ == "__main__":
    main()
