"""Density: host memory per idle tiny VM, server memory per managed VM, and how many run at once.

1. Per-VM host memory: one idle tiny VM booted to its ready line, then left alone for a few
   seconds. From /proc/<pid>/smaps: the RSS of the guest-RAM mapping (what the guest touched) and
   the rest (QEMU itself: code, heap, device state, the TCG translation buffer); from smaps_rollup
   the RSS and PSS of the whole process. For VoidVM's QEMU flags and for libvirt's default domain.
2. Many at once: VoidVM VMs are started in steps (5, 10, 20, 40 by default); after each step every
   VM's console must show the ready line and answer a command typed on its serial console (through
   VoidVM's raw console WebSocket), else the run stops there. The server's RSS at each step gives
   its memory per managed VM; the VMs' CPU use while idle shows what bounds density under TCG.
Every VM is killed at the end. Run: .venv/bin/python -m bench.density [--steps 5,10,20,40]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import (
    READY_LINE,
    Server,
    bench_accel,
    kill_qemu_under,
    log,
    qemu_pids_under,
    smaps_rollup,
    tiny_media,
    voidvm_server,
)
from bench.libvirt import LibvirtUnavailable, domain_xml, libvirt_daemon
from bench.loadgen import cpu_seconds
from bench.report import Section, Table
from voidvm_server.drivers.base import BootMedia
from voidvm_server.drivers.qemu.process import read_pidfile

MEMORY_MB = 128
IDLE_SECONDS = 5.0


@dataclass
class QemuMemory:
    rss_kib: int
    pss_kib: int
    guest_ram_rss_kib: int
    tcg_buffer_rss_kib: int

    @property
    def overhead_rss_kib(self) -> int:
        return self.rss_kib - self.guest_ram_rss_kib

    @property
    def overhead_pss_kib(self) -> int:
        return self.pss_kib - self.guest_ram_rss_kib


def qemu_memory(pid: int, memory_mb: int) -> QemuMemory:
    """Split a QEMU's resident memory into guest RAM and the rest, from /proc/<pid>/smaps."""
    guest_kib = memory_mb * 1024
    mappings: list[dict[str, object]] = []
    current: dict[str, object] = {}
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
            current = {"perms": parts[1], "path": parts[5] if len(parts) > 5 else ""}
            mappings.append(current)
        elif parts[0] in {"Size:", "Rss:"}:
            current[parts[0][:-1]] = int(parts[1])
    anon = [m for m in mappings if not m["path"]]
    ram = [m for m in anon if guest_kib <= int(m["Size"]) <= guest_kib + 4096]  # type: ignore[call-overload]
    guest = max((int(m["Rss"]) for m in ram), default=0)  # type: ignore[call-overload]
    tcg = sum(int(m["Rss"]) for m in anon if m["perms"] == "rwxp")  # type: ignore[call-overload]
    rollup = smaps_rollup(pid)
    return QemuMemory(rollup["Rss"], rollup["Pss"], guest, tcg)


def wait_ready(log_path: Path, timeout: float) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if READY_LINE in log_path.read_bytes():
                return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(f"no ready line in {log_path}")


def console_answers(server: Server, vm_id: str, timeout: float = 15.0) -> bool:
    """Type a command on the serial console (raw WebSocket) and wait for its computed answer."""
    from websockets.sync.client import connect

    n = secrets.randbelow(10**6)
    expected = f"ok{n + 1}ok".encode()
    uri = f"ws://127.0.0.1:{server.port}/api/v1/vms/{vm_id}/console?token={server.token}"
    deadline = time.monotonic() + timeout
    with connect(uri, open_timeout=timeout, close_timeout=2) as ws:
        ws.send(f"\necho ok$(({n}+1))ok\n")
        seen = b""
        while time.monotonic() < deadline:
            try:
                frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            seen += frame if isinstance(frame, bytes) else frame.encode()
            if expected in seen:
                return True
    return False


# -- 1. memory of one idle VM ---------------------------------------------------------------------
def voidvm_idle_vm(server: Server, client: httpx.Client) -> tuple[QemuMemory, float]:
    vm = client.post("/vms", json={"name": "density-one", "cpu": 1, "memory": MEMORY_MB, "disk": 1}).json()
    vm_id = vm["data"]["id"]
    assert client.post(f"/vms/{vm_id}/start").status_code == 200
    boot = wait_ready(server.data_dir / "vms" / vm_id / "console.log", 120)
    time.sleep(IDLE_SECONDS)
    pid = read_pidfile(server.data_dir / "vms" / vm_id / "qemu.pid")
    assert pid is not None
    memory = qemu_memory(pid, MEMORY_MB)
    cpu = idle_cpu([pid])
    client.post(f"/vms/{vm_id}/stop", json={"force": True})
    client.delete(f"/vms/{vm_id}")
    log(f"one VM: ready after {boot:.1f} s, {memory.rss_kib / 1024:.0f} MiB RSS")
    return memory, cpu or 0.0


def libvirt_idle_vm(media: BootMedia, tmp: Path) -> QemuMemory:
    with libvirt_daemon(tmp) as lv:
        disk = tmp / "density-libvirt.qcow2"
        console = tmp / "density-libvirt-console.log"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
        assert media.kernel and media.initrd and media.kernel_cmdline
        name = f"voidvm-bench-density-{os.getpid()}"
        lv.define(
            name,
            domain_xml(
                name,
                kernel=media.kernel,
                initrd=media.initrd,
                cmdline=media.kernel_cmdline,
                memory_mb=MEMORY_MB,
                cpus=1,
                accel=bench_accel(),
                disk=disk,
                console_log=console,
                vnc_socket=tmp / "density-libvirt-vnc.sock",
            ),
        )
        lv.virsh("start", name)
        wait_ready(console, 120)
        time.sleep(IDLE_SECONDS)
        memory = qemu_memory(lv.pid(name), MEMORY_MB)
        lv.destroy(name)
        return memory


def idle_cpu(pids: list[int], seconds: float = 5.0) -> float | None:
    """CPU used by these processes over `seconds`, in cores (1.0 = one full core)."""
    try:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(seconds)
        return (sum(cpu_seconds(p) for p in pids) - before) / seconds
    except OSError:
        return None


# -- 2. many at once -----------------------------------------------------------------------------
@dataclass
class Step:
    vms: int
    boot_s: float
    ready: int
    answering: int
    server_rss_kib: int
    qemu_rss_kib: int
    qemu_pss_kib: int
    idle_cpu_cores: float
    mem_available_gib: float
    load: str
    ok: bool


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return 0.0


def ramp(server: Server, client: httpx.Client, steps: list[int]) -> tuple[int, list[Step], int]:
    """Start VMs step by step; returns the server's RSS with 0 VMs, the steps, and its RSS with the
    VMs defined but stopped (measured at the end)."""
    client.get("/vms")
    rss_zero = smaps_rollup(server.process.pid)["Rss"]
    vm_ids: list[str] = []
    results: list[Step] = []
    for target in steps:
        new = []
        started = time.monotonic()
        while len(vm_ids) < target:
            body = {"name": f"density-{len(vm_ids)}", "cpu": 1, "memory": MEMORY_MB, "disk": 1}
            response = client.post("/vms", json=body)
            assert response.status_code == 201, response.text
            vm_id = response.json()["data"]["id"]
            started_vm = client.post(f"/vms/{vm_id}/start")
            if started_vm.status_code != 200:
                log(f"start {vm_id} failed: {started_vm.text[:200]}")
                break
            vm_ids.append(vm_id)
            new.append(vm_id)
        ready = 0
        deadline = started + 60 + 6 * len(new)
        for vm_id in vm_ids:
            with contextlib.suppress(TimeoutError):
                wait_ready(
                    server.data_dir / "vms" / vm_id / "console.log", max(1, deadline - time.monotonic())
                )
                ready += 1
        boot = time.monotonic() - started
        answering = 0
        for vm_id in vm_ids:
            try:
                answering += console_answers(server, vm_id)
            except Exception as exc:  # a refused or dropped socket counts as not answering
                log(f"console of {vm_id}: {type(exc).__name__}: {exc}")
        pids = qemu_pids_under(server.data_dir)
        rollups = [smaps_rollup(p) for p in pids]
        cpu = idle_cpu(pids) or 0.0
        step = Step(
            vms=len(vm_ids),
            boot_s=boot,
            ready=ready,
            answering=answering,
            server_rss_kib=smaps_rollup(server.process.pid)["Rss"],
            qemu_rss_kib=sum(r["Rss"] for r in rollups),
            qemu_pss_kib=sum(r["Pss"] for r in rollups),
            idle_cpu_cores=cpu,
            mem_available_gib=mem_available_gib(),
            load=_load(),
            ok=len(vm_ids) == target and ready == target and answering == target,
        )
        results.append(step)
        log(
            f"{step.vms} VMs: ready {step.ready}, answering {step.answering}, all up in {boot:.1f} s, "
            f"idle CPU {cpu:.2f} cores, server RSS {step.server_rss_kib / 1024:.0f} MiB"
        )
        if not step.ok:
            break
    for vm_id in vm_ids:
        client.post(f"/vms/{vm_id}/stop", json={"force": True})
    time.sleep(1)
    rss_stopped = smaps_rollup(server.process.pid)["Rss"]
    return rss_zero, results, rss_stopped


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def run(steps: list[int], use_libvirt: bool = True) -> Section:
    section = Section(
        "density",
        "Density: memory per VM and VMs at once",
        f".venv/bin/python -m bench.density --steps {','.join(map(str, steps))}",
    )
    libvirt_mem: QemuMemory | None = None
    note = ""
    with voidvm_server() as server, server.client() as client, tempfile.TemporaryDirectory() as tmp:
        media = tiny_media(server)
        assert isinstance(media, BootMedia)
        ours, idle_one = voidvm_idle_vm(server, client)
        if use_libvirt:
            try:
                libvirt_mem = libvirt_idle_vm(media, Path(tmp))
            except LibvirtUnavailable as exc:
                note = f"libvirt skipped: {exc}"
                log(note)
            finally:
                kill_qemu_under(Path(tmp))
        rss_zero, ramp_steps, rss_stopped = ramp(server, client, steps)
    rows = []
    for label, m in [("VoidVM (its QEMU flags)", ours), ("libvirt default domain", libvirt_mem)]:
        if m is None:
            rows.append([label, "skipped", "", "", "", "", ""])
            continue
        rows.append(
            [
                label,
                mib(m.rss_kib),
                mib(m.pss_kib),
                mib(m.guest_ram_rss_kib),
                mib(m.tcg_buffer_rss_kib),
                mib(m.overhead_rss_kib),
                mib(m.overhead_pss_kib),
            ]
        )
    section.tables.append(
        Table(
            [
                "QEMU process",
                "RSS MiB",
                "PSS MiB",
                "guest RAM touched MiB",
                "TCG code buffer MiB",
                "overhead RSS MiB",
                "overhead PSS MiB",
            ],
            rows,
            f"One idle tiny VM ({MEMORY_MB} MB guest), {IDLE_SECONDS:g} s after its ready line; "
            "overhead = process minus the guest-RAM mapping's resident pages",
        )
    )
    step_rows = [
        [
            str(s.vms),
            str(s.ready),
            str(s.answering),
            f"{s.boot_s:.1f}",
            f"{s.idle_cpu_cores:.2f}",
            mib(s.qemu_rss_kib / max(1, s.vms)),
            mib(s.qemu_pss_kib / max(1, s.vms)),
            mib(s.server_rss_kib),
            mib((s.server_rss_kib - rss_zero) / max(1, s.vms)),
            f"{s.mem_available_gib:.1f}",
            s.load,
            "yes" if s.ok else "NO",
        ]
        for s in ramp_steps
    ]
    section.tables.append(
        Table(
            [
                "VMs",
                "ready",
                "console answers",
                "all ready after s",
                "idle CPU (cores)",
                "QEMU RSS/VM MiB",
                "QEMU PSS/VM MiB",
                "server RSS MiB",
                "server MiB/VM",
                "MemAvailable GiB",
                "load 1/5/15",
                "ok",
            ],
            step_rows,
            f"VoidVM VMs of {MEMORY_MB} MB started in steps; server RSS with no VM: {mib(rss_zero)} MiB",
        )
    )
    section.reading.append(
        f"An idle tiny VM under VoidVM costs the host {mib(ours.rss_kib)} MiB RSS "
        f"({mib(ours.pss_kib)} MiB PSS), "
        f"of which the guest touched {mib(ours.guest_ram_rss_kib)} MiB; QEMU's own share is "
        f"{mib(ours.overhead_rss_kib)} MiB RSS / {mib(ours.overhead_pss_kib)} MiB PSS"
        + (
            f", {mib(ours.tcg_buffer_rss_kib)} MiB of it TCG's translated code."
            if ours.tcg_buffer_rss_kib
            else "."
        )
    )
    if libvirt_mem:
        section.reading.append(
            f"libvirt's default domain for the same guest: {mib(libvirt_mem.rss_kib)} MiB RSS, "
            f"QEMU's own share "
            f"{mib(libvirt_mem.overhead_rss_kib)} MiB RSS / {mib(libvirt_mem.overhead_pss_kib)} MiB PSS "
            f"(plus libvirtd itself, not counted)."
        )
    if ramp_steps:
        good = [s for s in ramp_steps if s.ok]
        last = ramp_steps[-1]
        most = good[-1].vms if good else 0
        bound = "the largest step tried" if last.ok else f"the next step ({last.vms} VMs) failed"
        per_vm_cpu = last.idle_cpu_cores / max(1, last.vms)
        per_vm_pss = last.qemu_pss_kib / max(1, last.vms) / 1024**2
        available = ramp_steps[0].mem_available_gib + ramp_steps[0].qemu_pss_kib / 1024**2
        cpu_bound = f"{(os.cpu_count() or 1) / per_vm_cpu:.0f}" if per_vm_cpu > 0 else "no limit seen"
        section.reading.append(
            f"{most} tiny VMs ran at once with every console answering ({bound}). Idle, each used "
            f"{per_vm_cpu * 100:.1f}% of a core ({bench_accel()}) and {per_vm_pss * 1024:.0f} MiB PSS: "
            f"memory "
            f"({available:.0f} GiB available) would allow about {available / per_vm_pss:.0f} of them, idle "
            f"CPU about {cpu_bound}. What bounds a step is the boot: under TCG every guest needs a few "
            f"CPU-seconds to boot and they all boot at once ({last.vms} were ready {last.boot_s:.0f} s "
            f"after their step began)."
        )
        per_vm = (last.server_rss_kib - rss_zero) / max(1, last.vms)
        section.reading.append(
            f"The server grew from {mib(rss_zero)} MiB with no VM to {mib(last.server_rss_kib)} MiB with "
            f"{last.vms} running: about {per_vm:.0f} KiB per managed VM (QMP connection, exit watcher, "
            f"console state); {mib(rss_stopped)} MiB once they were stopped."
        )
    if note:
        section.reading.append(note)
    section.data = {
        "memory_mb": MEMORY_MB,
        "voidvm_vm": ours.__dict__,
        "idle_one_vm_cores": idle_one,
        "libvirt_vm": libvirt_mem.__dict__ if libvirt_mem else None,
        "server_rss_zero_kib": rss_zero,
        "server_rss_stopped_kib": rss_stopped,
        "steps": [s.__dict__ for s in ramp_steps],
    }
    return section.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default="5,10,20,40")
    parser.add_argument("--no-libvirt", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    section = run([int(x) for x in args.steps.split(",")], not args.no_libvirt)
    section.print()
    if not args.no_save:
        section.save()


if __name__ == "__main__":
    main()
