"""Benchmark results: tables printed to the terminal, kept as JSON, rendered into docs/benchmarks.md.

Each benchmark saves one `Section` to `bench/results/<key>.json`; `bench.run_all` renders every
saved section into the generated block of docs/benchmarks.md. Text outside that block (hand-written
analysis, other engineers' sections) is kept as it is.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import ROOT, load_average, machine_info

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- BEGIN bench/run_all.py: generated from bench/results/*.json; edit bench/, not this block -->"
END = "<!-- END bench/run_all.py -->"
ORDER = [
    "start_latency", "create_latency", "api_throughput", "login_flood",
    "density", "list_scale", "micro", "profile",
]  # fmt: skip
OTHERS = ["ws_fanout", "console_rtt"]  # the WebSocket engineer's sections, rendered after ours


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    title: str = ""

    def text(self) -> str:
        widths = [max(len(str(c)) for c in col) for col in zip(self.headers, *self.rows, strict=False)]
        lines = [self.title] if self.title else []
        lines.append("  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True)))
        lines.append("  ".join("-" * w for w in widths))
        for row in self.rows:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
        return "\n".join(lines)


@dataclass
class Section:
    key: str
    title: str
    command: str
    tables: list[Table] = field(default_factory=list)
    reading: list[str] = field(default_factory=list)
    data: dict[str, object] = field(default_factory=dict)
    load_before: str = field(default_factory=load_average)
    load_after: str = ""
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    machine: dict[str, str] = field(default_factory=machine_info)

    def finish(self) -> Section:
        self.load_after = load_average()
        return self

    def print(self) -> None:
        print(f"\n== {self.title} ==")
        for table in self.tables:
            print(table.text())
            print()
        for paragraph in self.reading:
            print(f"* {paragraph}")
        print(f"(load average before: {self.load_before}; after: {self.load_after})")

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.key}.json"
        path.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n")
        return path

    def markdown(self, number: int) -> str:
        parts = [
            f"## {number}. {self.title}",
            "",
            f"`{self.command}`  ",
            f"Run {self.when}, load "
            f"average (1/5/15 min) {self.load_before} before and {self.load_after} after.",
            "",
        ]
        for table in self.tables:
            parts += [table.markdown(), ""]
        if self.reading:
            parts += ["Reading:", ""]
            parts += [f"- {p}" for p in self.reading]
            parts.append("")
        return "\n".join(parts)


def load_sections() -> list[Section]:
    sections = []
    known = [*ORDER, *OTHERS]
    extra = sorted(p.stem for p in RESULTS.glob("*.json") if p.stem not in known) if RESULTS.exists() else []
    for key in [*known, *extra]:
        path = RESULTS / f"{key}.json"
        if not path.exists():
            continue
        raw = json.loads(path.read_text())
        raw["tables"] = [Table(**t) for t in raw.get("tables", [])]
        sections.append(Section(**raw))
    return sections


TITLE = "# VoidVM benchmarks\n"
INTRO = """\
VoidVM against its peers on the same machine: a bare `qemu-system-x86_64` with the flags VoidVM
gives it (the physical limit), libvirt (`libvirtd` + `virsh`, the usual manager), and for the API a
bare FastAPI endpoint on the same stack (the ceiling). Timings live here, never in the tests.

Run everything with one command, as root (libvirt and wrk are installed from Debian on first use;
without root, libvirt is skipped with a note and the API load falls back to a Python client):

```bash
make bench                                   # = .venv/bin/python -m bench.run_all (about 12 min)
.venv/bin/python -m bench.run_all --quick    # fewer runs, shorter load tests (a smoke run)
.venv/bin/python -m bench.run_all --only start_latency,list_scale
.venv/bin/python -m bench.start_latency --runs 20   # any one benchmark, printing its tables
.venv/bin/python -m bench.run_all --render   # rebuild this page from bench/results/*.json
```
"""
BENCHMARKS = [
    [
        "`bench/start_latency.py`",
        "start until `running` / `-daemonize` returns / `virsh start` returns; "
        "until the guest's first serial byte",
    ],
    ["`bench/create_latency.py`", "`POST /vms` until 201, against `qemu-img create`"],
    [
        "`bench/api_throughput.py`",
        "`GET /vms` under wrk at rising concurrency on `serve` as the README runs it (default "
        "workers and logging), against a bare FastAPI app with as many workers "
        "(`bench/ceiling_app.py`) and against `serve --workers 1`",
    ],
    ["`bench/login_flood.py`", "`GET /vms` while 40 clients log in without pause, against the same GET idle"],
    [
        "`bench/density.py`",
        "QEMU memory per idle VM (VoidVM's flags, libvirt's default domain), server "
        "memory per VM, VMs at once with answering consoles",
    ],
    ["`bench/list_scale.py`", "`GET /vms` with 10,000 VMs, first and deep page, and the SQL behind it"],
    ["`bench/micro.py`", "what one database call, one authentication and one list cost, layer by layer"],
    [
        "`bench/profile.py`",
        "phase timers and pyinstrument trees per request (`bench/profiled_server.py`), py-spy under load",
    ],
]
OUTRO = """\
Each benchmark prints its tables, saves them to `bench/results/<name>.json`, and `run_all` renders
this block from those files (the WebSocket benchmarks' sections too, once they have run). Every
benchmark starts its own servers on 127.0.0.1 with fresh data directories and, when it ends, kills
every QEMU it started, its servers and libvirtd. Numbers taken while other work loads the machine
are noisy: the load average at the start and the end of every benchmark is recorded with it.
"""


def machine_markdown(sections: list[Section]) -> str:
    machine = sections[0].machine if sections else machine_info()
    rows = [[k, v] for k, v in machine.items()]
    return "## Machine\n\n" + Table(["", ""], rows).markdown() + "\n"


def render(sections: list[Section]) -> str:
    table = Table(["benchmark", "what it measures"], BENCHMARKS).markdown()
    body = [BEGIN, "", INTRO, table, "", OUTRO, machine_markdown(sections)]
    body += [s.markdown(i) for i, s in enumerate(sections, start=1)]
    body.append(END)
    return "\n".join(body)


def write_doc(sections: list[Section]) -> Path:
    """Replace the generated block of docs/benchmarks.md; keep everything around it."""
    block = render(sections)
    if DOC.exists():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            text = head + block + tail
        else:  # someone else's sections only: ours go first, theirs stay below
            text = TITLE + "\n" + block + "\n\n" + text
    else:
        text = TITLE + "\n" + block + "\n"
    DOC.write_text(text)
    return DOC
