"""Create latency: `POST /vms` with the local tiny image until 201, one after another.

The floor is the work a create must do on the host: `qemu-img create` of the VM's disk, timed the
same way (a subprocess from Python). The VMs are deleted afterwards (their delete latency is
reported too). Run: .venv/bin/python -m bench.create_latency [--count 100]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import log, percentile, voidvm_server
from bench.report import Section, Table


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def run(count: int = 100) -> Section:
    section = Section(
        "create_latency", "Create latency", f".venv/bin/python -m bench.create_latency --count {count}"
    )
    creates: list[float] = []
    deletes: list[float] = []
    floor: list[float] = []
    with voidvm_server() as server, server.client() as client, tempfile.TemporaryDirectory() as tmp:
        client.get("/vms")  # warm-up: first authenticated request
        ids = []
        try:
            for i in range(count):
                body = {"name": f"bench-create-{i}", "cpu": 1, "memory": 128, "disk": 1}
                started = time.perf_counter()
                response = client.post("/vms", json=body)
                creates.append(time.perf_counter() - started)
                assert response.status_code == 201, response.text
                ids.append(response.json()["data"]["id"])
                disk = Path(tmp) / f"floor-{i}.qcow2"
                started = time.perf_counter()
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
                floor.append(time.perf_counter() - started)
        finally:
            for vm_id in ids:
                started = time.perf_counter()
                response = client.delete(f"/vms/{vm_id}")
                deletes.append(time.perf_counter() - started)
                if response.status_code != 200:
                    log(f"delete {vm_id}: {response.status_code} {response.text[:200]}")
    rows = []
    for label, values in [
        ("VoidVM POST /vms -> 201", creates),
        ("qemu-img create (floor)", floor),
        ("VoidVM DELETE /vms/{id}", deletes),
    ]:
        rows.append(
            [
                label,
                ms(percentile(values, 0.5)),
                ms(percentile(values, 0.9)),
                ms(percentile(values, 0.99)),
                ms(max(values)),
                str(len(values)),
            ]
        )
    section.tables.append(
        Table(
            ["operation", "p50 ms", "p90 ms", "p99 ms", "max ms", "n"],
            rows,
            f"{count} sequential creates of a 1 vCPU / 128 MB / 1 GB VM on the tiny image",
        )
    )
    p50, p50_floor = percentile(creates, 0.5), percentile(floor, 0.5)
    section.reading.append(
        f"A create takes {p50 * 1000:.0f} ms at the median and {percentile(creates, 0.99) * 1000:.0f} ms at "
        f"p99; {p50_floor * 1000:.0f} ms of it is the disk that `qemu-img create` makes, so the API, "
        f"the quota transaction, the two status writes and the audit entry add "
        f"{(p50 - p50_floor) * 1000:.0f} ms."
    )
    section.data = {"count": count, "create_s": creates, "delete_s": deletes, "qemu_img_s": floor}
    return section.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    section = run(args.count)
    section.print()
    if not args.no_save:
        section.save()


if __name__ == "__main__":
    main()
