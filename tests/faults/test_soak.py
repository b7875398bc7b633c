"""Soak: create/start/stop(force)/delete cycles against a real server process (issue #7, case 7).

VOIDVM_SOAK_CYCLES sets the number of cycles (60 by default, quick enough for CI; 300 for the
record in docs/reliability.md). The server's open descriptors, threads and RSS are sampled after
every cycle; the last 10% must not be above the first 10% (after a short warm-up) beyond a small
tolerance, and nothing may be left: no zombie child, no QEMU, no run directory, no disk.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

from tests.faults.conftest import (
    ProcSample,
    ServerFactory,
    metric,
    proc_sample,
    qemu_pids,
    zombie_children,
)

pytestmark = pytest.mark.qemu
CYCLES = int(os.environ.get("VOIDVM_SOAK_CYCLES", "60"))
WARM_UP = 5  # pools, caches and worker threads fill up during the first cycles
FD_SLACK, THREAD_SLACK = 3, 3
RSS_SLACK_KIB = 12 * 1024  # the allocator keeps some of what Python frees


def window(samples: list[ProcSample]) -> dict[str, float]:
    return {
        "fds": statistics.mean(s.fds for s in samples),
        "threads": statistics.mean(s.threads for s in samples),
        "rss_kib": statistics.mean(s.rss_kib for s in samples),
    }


async def test_create_start_stop_delete_cycles_leak_nothing(servers: ServerFactory) -> None:
    server = await servers()
    await server.start()
    samples: list[ProcSample] = []
    began = time.monotonic()
    async with server.api() as http:
        for n in range(WARM_UP + CYCLES):
            vm_id = (await http.create_vm(f"soak-{n}"))["id"]
            started = await http.action(vm_id, "start")
            assert started["data"]["status"] == "running"
            stopped = await http.action(vm_id, "stop", force=True)
            assert stopped["data"]["status"] == "stopped"
            await http.delete(vm_id)
            assert qemu_pids(vm_id) == []
            if n >= WARM_UP:
                samples.append(proc_sample(server.pid))
        elapsed = time.monotonic() - began
        assert await http.vms() == []
        assert (await http.usage())["vms"] == 0

    tenth = max(1, CYCLES // 10)
    first, last = window(samples[:tenth]), window(samples[-tenth:])
    metric("soak_cycles", CYCLES)
    metric("soak_seconds", round(elapsed, 1))
    metric("soak_first_10pct", {k: round(v, 1) for k, v in first.items()})
    metric("soak_last_10pct", {k: round(v, 1) for k, v in last.items()})
    quarters = [samples[min(len(samples) - 1, len(samples) * q // 4)].rss_kib for q in range(5)]
    metric("soak_rss_kib_at_0_25_50_75_100pct", quarters)
    metric("soak_max", {"fds": max(s.fds for s in samples), "threads": max(s.threads for s in samples),
                        "rss_kib": max(s.rss_kib for s in samples)})  # fmt: skip
    assert last["fds"] <= first["fds"] + FD_SLACK, (first, last)
    assert last["threads"] <= first["threads"] + THREAD_SLACK, (first, last)
    assert last["rss_kib"] <= first["rss_kib"] + RSS_SLACK_KIB, (first, last)

    assert zombie_children(server.pid) == []
    assert qemu_pids(str(server.data_dir)) == []
    assert list(server.vms_dir.iterdir()) == []
