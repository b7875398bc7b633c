"""Choose the accelerator: KVM when it really runs guests, else TCG (software emulation).

Opening /dev/kvm is not enough: under nested virtualisation it can open yet hang every guest.
So `auto` boots a 512-byte boot sector that writes one byte to the serial port, under KVM with the
machine and CPU flags real VMs get, with a short deadline. The answer is cached in the data
directory, keyed by the QEMU binary's version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 8.0
CACHE_FILE = "accel.json"

# mov dx,0x3f8 ; mov al,'K' ; out dx,al ; cli ; hlt ; jmp $-1  -- then the boot signature.
_BOOT_SECTOR = bytes.fromhex("baf803b04beefaf4ebfd").ljust(510, b"\0") + b"\x55\xaa"


def kvm_device_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


async def _boot_probe(qemu_binary: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="voidvm-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(_BOOT_SECTOR.ljust(1024 * 1024, b"\0"))  # SeaBIOS wants a real disk
        proc = await asyncio.create_subprocess_exec(
            qemu_binary, "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-nodefaults",
            "-no-user-config", "-display", "none", "-m", "64", "-serial", "stdio",
            "-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                while chunk := await proc.stdout.read(64):
                    if b"K" in chunk:
                        return True
            return False
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def choose_accel(requested: str, qemu_binary: str, qemu_version: str, data_dir: Path) -> str:
    if requested in {"kvm", "tcg"}:
        return requested
    if not kvm_device_usable():
        return "tcg"
    cache = data_dir / CACHE_FILE
    with contextlib.suppress(OSError, ValueError, KeyError):
        cached = json.loads(cache.read_text())
        if cached["qemu_version"] == qemu_version:
            return str(cached["accel"])
    works = await _boot_probe(qemu_binary)
    accel = "kvm" if works else "tcg"
    if not works:
        log.warning("/dev/kvm is present but a KVM guest did not boot; using tcg")
    data_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"qemu_version": qemu_version, "accel": accel}))
    return accel
