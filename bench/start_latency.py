"""Start latency: VoidVM's API against a bare `qemu-system -daemonize` with the same flags, and libvirt.

Two figures per side, over runs that alternate between the sides (the order rotates every round):
- control plane: until the VM is up and controllable (VoidVM: the start call returns `running`;
  bare: `qemu-system -daemonize` returns; libvirt: `virsh start` returns);
- to the guest: from the start request to the guest's first serial byte, seen the same way on every
  side (the serial log file, watched by a thread started before the request: VoidVM's console
  recorder writes it for VoidVM, QEMU's `logfile=` for the bare side and libvirt), and for VoidVM
  also as a user sees it: the first frame on its raw console WebSocket (`/vms/{id}/console`, opened
  once and kept open, as it stays across a stop and start).
Every VM is killed as soon as its first byte is seen, so the sides never overlap.
Run: .venv/bin/python -m bench.start_latency [--runs 10] [--no-libvirt]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import (
    bench_accel,
    free_port,
    kill_qemu_under,
    log,
    summarize,
    tiny_media,
    voidvm_server,
)
from bench.libvirt import Libvirt, LibvirtUnavailable, domain_xml, libvirt_daemon
from bench.report import Section, Table
from voidvm_server.drivers.base import BootMedia, VMSpec
from voidvm_server.drivers.qemu.cmdline import RunPaths, build_argv
from voidvm_server.drivers.qemu.process import read_pidfile

GUEST_TIMEOUT = 60.0
MEMORY_MB = 256
CONTROL_TARGET_MS = 100.0
GUEST_RATIO_TARGET = 1.05
Sample = tuple[float, float]  # (control plane, first serial byte), seconds from the request


class FirstByte:
    """A thread that notes the moment `path` first holds a byte."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                if self.path.stat().st_size > 0:
                    self.at = time.perf_counter()
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.0005)

    def wait(self, started: float) -> float:
        self._thread.join(GUEST_TIMEOUT)
        self._stop.set()
        if self.at is None:
            raise TimeoutError(f"no serial output in {self.path} after {GUEST_TIMEOUT:g} s")
        return self.at - started


class ConsoleFrames:
    """VoidVM's raw console WebSocket, open across the runs: notes the first frame after `arm()`."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._socket = connect(url, max_size=None, open_timeout=30)
        self._lock = threading.Lock()
        self._armed = False
        self._seen = threading.Event()
        self.at: float | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):
            while True:
                self._socket.recv()
                now = time.perf_counter()
                with self._lock:
                    if self._armed and self.at is None:
                        self.at = now
                        self._seen.set()

    def arm(self) -> None:
        with self._lock:
            self._armed, self.at = True, None
            self._seen.clear()

    def wait(self, started: float) -> float:
        if not self._seen.wait(GUEST_TIMEOUT):
            raise TimeoutError(f"no console frame after {GUEST_TIMEOUT:g} s")
        with self._lock:
            self._armed = False
            assert self.at is not None
            return self.at - started

    def close(self) -> None:
        self._socket.close()


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.005)


def voidvm_run(
    client: object, vm_id: str, log_path: Path, console: ConsoleFrames | None = None
) -> tuple[Sample, float | None]:
    """(control plane, first byte in the log), and the first console frame when `console` is given."""
    import httpx

    assert isinstance(client, httpx.Client)
    log_path.unlink(missing_ok=True)
    watcher = FirstByte(log_path)
    if console:
        console.arm()
    started = time.perf_counter()
    response = client.post(f"/vms/{vm_id}/start")
    controllable = time.perf_counter()
    assert response.status_code == 200 and response.json()["data"]["status"] == "running", response.text
    guest = watcher.wait(started)
    on_socket = console.wait(started) if console else None
    stopped = client.post(f"/vms/{vm_id}/stop", json={"force": True})
    assert stopped.status_code == 200, stopped.text
    time.sleep(0.2)  # the killed guest's last frames arrive now, not after the next arm()
    return (controllable - started, guest), on_socket


def bare_run(media: BootMedia, accel: str, workdir: Path) -> Sample:
    run_dir = workdir / f"bare-{time.monotonic_ns()}"
    run_dir.mkdir()
    paths = RunPaths(run_dir)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(paths.disk), "1G"], check=True)
    spec = VMSpec("vm-bench", 1, MEMORY_MB, media, free_port())
    # Standalone: no VoidVM attached, so QEMU runs the guest at once and logs the serial itself.
    argv = build_argv(spec, paths, binary="qemu-system-x86_64", accel=accel, net_fd=None, standalone=True)
    watcher = FirstByte(paths.console_log)
    old_umask = os.umask(0o077)  # as VoidVM's driver does
    try:
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        controllable = time.perf_counter()
    finally:
        os.umask(old_umask)
    try:
        guest = watcher.wait(started)
    finally:
        pid = read_pidfile(paths.pidfile)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid)
    return controllable - started, guest


def libvirt_run(lv: Libvirt, name: str, log_path: Path) -> Sample:
    log_path.unlink(missing_ok=True)
    watcher = FirstByte(log_path)
    started = time.perf_counter()
    lv.virsh("start", name)
    controllable = time.perf_counter()
    try:
        guest = watcher.wait(started)
    finally:
        pid = lv.pid(name)
        lv.destroy(name)
        wait_gone(pid)
    return controllable - started, guest


def ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def run(runs: int = 10, use_libvirt: bool = True) -> Section:
    accel = bench_accel()
    section = Section(
        "start_latency",
        "Start latency: VoidVM vs bare QEMU vs libvirt",
        f".venv/bin/python -m bench.start_latency --runs {runs}",
    )
    samples: dict[str, list[Sample]] = {"voidvm": [], "bare": [], "libvirt": []}
    on_socket: list[float] = []
    libvirt_note = ""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(voidvm_server())
        client = stack.enter_context(server.client())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voidvm-bench-start-")))
        stack.callback(kill_qemu_under, tmp)
        media = tiny_media(server)
        assert isinstance(media, BootMedia)
        vm = client.post("/vms", json={"name": "bench", "cpu": 1, "memory": MEMORY_MB, "disk": 1})
        vm_id = vm.json()["data"]["id"]
        voidvm_log = server.data_dir / "vms" / vm_id / "console.log"
        assert client.post(f"/vms/{vm_id}/start").status_code == 200
        ws_url = server.url.replace("http://", "ws://", 1) + f"/vms/{vm_id}/console?token={server.token}"
        console = ConsoleFrames(ws_url)  # opened while the VM runs; it stays open across restarts
        stack.callback(console.close)
        assert client.post(f"/vms/{vm_id}/stop", json={"force": True}).status_code == 200

        def voidvm_side() -> Sample:
            sample, frame = voidvm_run(client, vm_id, voidvm_log, console)
            assert frame is not None
            on_socket.append(frame)
            return sample

        sides: dict[str, Callable[[], Sample]] = {
            "voidvm": voidvm_side,
            "bare": lambda: bare_run(media, accel, tmp),
        }
        if use_libvirt:
            try:
                lv = stack.enter_context(libvirt_daemon(tmp))
                lv_log = tmp / "libvirt-console.log"
                disk = tmp / "libvirt-disk.qcow2"
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"], check=True)
                assert media.kernel and media.initrd and media.kernel_cmdline
                domain = f"voidvm-bench-start-{os.getpid()}"
                lv.define(
                    domain,
                    domain_xml(
                        domain,
                        kernel=media.kernel,
                        initrd=media.initrd,
                        cmdline=media.kernel_cmdline,
                        memory_mb=MEMORY_MB,
                        cpus=1,
                        accel=accel,
                        disk=disk,
                        console_log=lv_log,
                        vnc_socket=tmp / "libvirt-vnc.sock",
                    ),
                )
                libvirt_run(lv, domain, lv_log)  # warm-up: libvirtd's first start loads more
                sides["libvirt"] = lambda: libvirt_run(lv, domain, lv_log)
            except LibvirtUnavailable as exc:
                libvirt_note = f"libvirt skipped: {exc}"
                log(libvirt_note)
        voidvm_run(client, vm_id, voidvm_log)  # warm-up: first request, first QMP connection
        order = list(sides)
        for i in range(runs):
            for side in order[i % len(order) :] + order[: i % len(order)]:
                samples[side].append(sides[side]())
            log(
                f"round {i + 1}/{runs}: "
                + ", ".join(
                    f"{k} {v[-1][0] * 1000:.0f}/{v[-1][1] * 1000:.0f} ms" for k, v in samples.items() if v
                )
            )
        client.delete(f"/vms/{vm_id}")
    return report(section, samples, on_socket, accel, runs, libvirt_note)


def report(
    section: Section,
    samples: dict[str, list[Sample]],
    on_socket: list[float],
    accel: str,
    runs: int,
    note: str,
) -> Section:
    figures = {}
    for name, values in samples.items():
        if values:
            figures[name] = (summarize([v[0] for v in values]), summarize([v[1] for v in values]))
    rows = []
    for index, label in enumerate(["control plane", "to first serial byte"]):
        ours = figures["voidvm"][index]
        bare = figures["bare"][index]
        lv = figures["libvirt"][index] if "libvirt" in figures else None
        rows.append(
            [
                label,
                f"{ours.ms()} ({ours.spread()})",
                f"{bare.ms()} ({bare.spread()})",
                f"{lv.ms()} ({lv.spread()})" if lv else "skipped",
                ratio(ours.median, bare.median),
                ratio(ours.median, lv.median if lv else None),
            ]
        )
    socket = summarize(on_socket)
    bare_guest_figure = figures["bare"][1]
    lv_guest_figure = figures["libvirt"][1] if "libvirt" in figures else None
    rows.append(
        [
            "to first serial byte, VoidVM on its console WebSocket",
            f"{socket.ms()} ({socket.spread()})",
            f"{bare_guest_figure.ms()} ({bare_guest_figure.spread()})",
            f"{lv_guest_figure.ms()} ({lv_guest_figure.spread()})" if lv_guest_figure else "skipped",
            ratio(socket.median, bare_guest_figure.median),
            ratio(socket.median, lv_guest_figure.median if lv_guest_figure else None),
        ]
    )
    section.tables.append(
        Table(
            ["figure", "VoidVM", "bare qemu", "libvirt", "VoidVM/bare", "VoidVM/libvirt"],
            rows,
            f"Median (p10-p90) over {runs} alternating runs per side, accelerator {accel}, "
            f"tiny guest, {MEMORY_MB} MB, 1 vCPU; first bytes from the serial log file, and in the last "
            f"row VoidVM's from its console WebSocket",
        )
    )
    ours_ctrl, ours_guest = figures["voidvm"]
    bare_ctrl, bare_guest = figures["bare"]
    ctrl_ms = ours_ctrl.median * 1000
    verdict = "meets" if ctrl_ms <= CONTROL_TARGET_MS else "misses"
    section.reading.append(
        f"Control plane: VoidVM {ctrl_ms:.0f} ms against bare QEMU {bare_ctrl.median * 1000:.0f} ms: "
        f"VoidVM adds {(ours_ctrl.median - bare_ctrl.median) * 1000:.0f} ms over the launch itself "
        f"and {verdict} the target of at most {CONTROL_TARGET_MS:.0f} ms"
        + (f" by {ctrl_ms - CONTROL_TARGET_MS:.0f} ms." if ctrl_ms > CONTROL_TARGET_MS else ".")
    )
    if "libvirt" in figures:
        lv_ctrl = figures["libvirt"][0]
        section.reading.append(
            f"libvirt's `virsh start` takes {lv_ctrl.median * 1000:.0f} ms, so VoidVM's start call is "
            f"{lv_ctrl.median / ours_ctrl.median:.1f}x faster than libvirt's."
        )
    guest_ratio = ours_guest.median / bare_guest.median
    guest_gap, ctrl_gap = ours_guest.median - bare_guest.median, ours_ctrl.median - bare_ctrl.median
    spreads = ours_guest.p90 - ours_guest.p10, bare_guest.p90 - bare_guest.p10
    verdict = "meets" if guest_ratio <= GUEST_RATIO_TARGET else "misses"
    section.reading.append(
        f"To the guest: VoidVM/bare = {guest_ratio:.3f}, which {verdict} the target of at most "
        f"{GUEST_RATIO_TARGET}. The medians differ by {guest_gap * 1000:.0f} ms where the control planes "
        f"differ by {ctrl_gap * 1000:.0f} ms; the guest's own start under {accel} dominates, and its "
        f"p10-p90 spread ({spreads[0] * 1000:.0f} and {spreads[1] * 1000:.0f} ms) "
        f"is wider than either difference, so this ratio needs a quiet machine and many runs."
    )
    socket_ratio = socket.median / bare_guest.median
    verdict = "meets" if socket_ratio <= GUEST_RATIO_TARGET else "misses"
    section.reading.append(
        f"As a user sees it, on VoidVM's console WebSocket, the first frame arrives "
        f"{socket.median * 1000:.0f} ms after the start request "
        f"({(socket.median - ours_guest.median) * 1000:+.1f} ms against the log file): "
        f"VoidVM/bare = {socket_ratio:.3f}, which {verdict} the target."
    )
    if note:
        section.reading.append(note)
    section.data = {
        "accelerator": accel,
        "runs": runs,
        "memory_mb": MEMORY_MB,
        "samples": samples,
        "console_frame_s": on_socket,
        "libvirt_note": note,
        "summary": {k: {"control": v[0].as_dict(), "guest": v[1].as_dict()} for k, v in figures.items()},
    }
    return section.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-libvirt", action="store_true", help="compare with bare QEMU only")
    parser.add_argument("--no-save", action="store_true", help="print only; keep bench/results as is")
    args = parser.parse_args()
    section = run(args.runs, not args.no_libvirt)
    section.print()
    if not args.no_save:
        section.save()


if __name__ == "__main__":
    main()
