"""Start latency: VoidVM's API against a bare `qemu-system -daemonize` with the same flags.

Two figures per side, over alternating runs:
- control plane: until the VM is up and controllable (VoidVM: the start call returns `running`;
  bare: `qemu-system -daemonize` returns);
- to the guest: from the start request to the guest's first serial byte, seen the same way on both
  sides (QEMU's own serial log file).
Run: .venv/bin/python -m bench.start_latency [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import summarize, voidvm_server, wait_for_file_bytes
from voidvm_server.drivers.base import BootMedia, VMSpec
from voidvm_server.drivers.qemu.cmdline import RunPaths, build_argv
from voidvm_server.drivers.qemu.process import read_pidfile

GUEST_TIMEOUT = 60.0


def bare_run(media: BootMedia, accel: str, workdir: Path) -> tuple[float, float]:
    run_dir = workdir / f"bare-{time.monotonic_ns()}"
    run_dir.mkdir()
    paths = RunPaths(run_dir)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(paths.disk), "1G"], check=True)
    argv = build_argv(VMSpec("vm-bench", 1, 256, media, None), paths,
                      binary="qemu-system-x86_64", accel=accel)  # fmt: skip
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    controllable = time.perf_counter()
    first_byte = wait_for_file_bytes(paths.console_log, started + GUEST_TIMEOUT)
    pid = read_pidfile(paths.pidfile)
    if pid:
        os.kill(pid, signal.SIGKILL)
    return controllable - started, first_byte - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with voidvm_server() as server, server.client() as client, tempfile.TemporaryDirectory() as tmp:
        accel = client.get("/system/info").json()["data"]["hypervisor"]["accelerator"]
        tiny = next(i for i in client.get("/images").json()["data"]["images"] if i["name"] == "tiny")
        image_dir = server.data_dir / "images" / tiny["id"]
        from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE

        media = BootMedia(kernel=image_dir / "vmlinuz", initrd=image_dir / "initrd.img",
                          kernel_cmdline=TINY_KERNEL_CMDLINE)  # fmt: skip
        vm = client.post("/vms", json={"name": "bench", "cpu": 1, "memory": 256, "disk": 1}).json()["data"]
        log = server.data_dir / "vms" / vm["id"] / "console.log"
        api_ctrl, api_guest, bare_ctrl, bare_guest = [], [], [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.post(f"/vms/{vm['id']}/start")
            controllable = time.perf_counter()
            assert response.json()["data"]["status"] == "running", response.text
            first = wait_for_file_bytes(log, started + GUEST_TIMEOUT)
            api_ctrl.append(controllable - started)
            api_guest.append(first - started)
            client.post(f"/vms/{vm['id']}/stop", json={"force": True})
            ctrl, guest = bare_run(media, accel, Path(tmp))
            bare_ctrl.append(ctrl)
            bare_guest.append(guest)
        client.delete(f"/vms/{vm['id']}")
    rows = [
        ("control plane", summarize(api_ctrl), summarize(bare_ctrl)),
        ("to first serial byte", summarize(api_guest), summarize(bare_guest)),
    ]
    print(f"\nStart latency, accelerator {accel}, {args.runs} alternating runs each")
    print(f"{'figure':22} {'VoidVM':>44} {'bare qemu':>44} {'ratio':>7}")
    for name, ours, bare in rows:
        print(f"{name:22} {ours!s:>44} {bare!s:>44} {ours.median / bare.median:7.3f}")


if __name__ == "__main__":
    main()
