"""Choose the accelerator: KVM when it really runs guests fast, else TCG (software emulation).

Opening /dev/kvm is not enough: under nested virtualisation it can open yet hang every guest, or
run them so slowly (every exit to the outer hypervisor) that a Linux guest needs a minute to print
its first line where TCG needs a second. So `auto` boots a 512-byte boot sector that writes one
byte to the serial port, under KVM with the machine and CPU flags real VMs get and under TCG, and
takes KVM only when it answers and is not much slower than TCG (on real hardware it is faster), on
the best of two alternating rounds.
The answer is cached in the host's cache directory (every VoidVM of the host shares it), keyed by
the QEMU binary (its path and version), this rule and the boot: a reboot, another kernel, another
QEMU or another machine probes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from voidvm_server.drivers.qemu.process import run_tool
from voidvm_server.errors import DriverError

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 8.0
CACHE_FILE = "accel.json"
RULE = "kvm-at-most-5x-tcg-best-of-2"  # in the cache key: a new rule re-probes
# Seen on a nested host: KVM 1.4 s to the boot sector's byte, TCG 0.08 s (18x); its Linux guests took
# 53 s to their first serial line under KVM and 0.6 s under TCG. On real hardware KVM is the faster
# one; the margin is wide so that a cold or briefly loaded real host keeps KVM.
KVM_SLOWDOWN_ALLOWED = 5.0
KVM_SLACK_SECONDS = 0.5
PROBE_ROUNDS = 2

# mov dx,0x3f8 ; mov al,'K' ; out dx,al ; cli ; hlt ; jmp $-1  -- then the boot signature.
_BOOT_SECTOR = bytes.fromhex("baf803b04beefaf4ebfd").ljust(510, b"\0") + b"\x55\xaa"


def kvm_device_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


async def _boot_probe(qemu_binary: str, accel: str) -> float | None:
    """Seconds until the boot sector's byte reaches the serial port, None if it never does."""
    cpu = "host" if accel == "kvm" else "max"
    with tempfile.TemporaryDirectory(prefix="voidvm-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(_BOOT_SECTOR.ljust(1024 * 1024, b"\0"))  # SeaBIOS wants a real disk
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            qemu_binary, "-machine", "q35", "-accel", accel, "-cpu", cpu, "-nodefaults",
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
                        return time.perf_counter() - started
            return None
        except TimeoutError:
            return None
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator and why: `reason` is what `voidvm-server doctor` shows."""

    accel: str
    reason: str


def _probe_reason(kvm: float | None, tcg: float | None) -> str:
    if kvm is None:
        return (
            "/dev/kvm opens but the KVM probe guest did not boot "
            f"(QEMU failed or gave no answer within {PROBE_TIMEOUT:g} s)"
        )
    tcg_text = f"{tcg:.2f} s" if tcg is not None else "no answer"
    if kvm_is_fast_enough(kvm, tcg):
        return f"KVM booted the probe guest in {kvm:.2f} s (TCG: {tcg_text})"
    return (
        f"/dev/kvm opens but KVM booted the probe guest in {kvm:.2f} s against {tcg_text} under TCG "
        f"(more than {KVM_SLOWDOWN_ALLOWED:g}x slower: nested virtualisation?)"
    )


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def host_boot() -> str:
    """This boot of this host: the kernel's release and its boot id (a new one at every boot)."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    return f"{os.uname().release} {boot_id}"


def _write_cache(cache: Path, answer: dict[str, object]) -> None:
    """Whole or not at all: several VoidVMs of one host may probe at once."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(answer, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, cache)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def probe_accel(requested: str, qemu_binary: str, qemu_version: str, cache_dir: Path) -> AccelChoice:
    """Choose as the module docstring says, and say why (from the cached probe when it holds)."""
    if requested in {"kvm", "tcg"}:
        return AccelChoice(requested, f"requested (accel = {requested})")
    if not kvm_device_usable():
        return AccelChoice("tcg", "/dev/kvm is absent or not permitted")
    cache = cache_dir / CACHE_FILE
    boot = host_boot()
    binary = str(Path(shutil.which(qemu_binary) or qemu_binary).resolve())  # each QEMU its own answer
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        cached = json.loads(cache.read_text())
        key = (cached["qemu_version"], cached.get("rule"), cached.get("boot"), cached.get("binary"))
        if key == (qemu_version, RULE, boot, binary) and cached["accel"] in {"kvm", "tcg"}:
            kvm, tcg = _seconds(cached.get("kvm_seconds")), _seconds(cached.get("tcg_seconds"))
            reason = _probe_reason(kvm, tcg) if "kvm_seconds" in cached else "probed earlier"
            return AccelChoice(str(cached["accel"]), f"{reason} (cached in {cache})")
    kvm, tcg = await _best_times(qemu_binary)
    accel = "kvm" if kvm_is_fast_enough(kvm, tcg) else "tcg"
    if kvm is None:
        log.warning("/dev/kvm is present but a KVM guest did not boot; using tcg")
    elif accel == "tcg":
        log.warning(
            "/dev/kvm is present but KVM booted a guest in %.2f s against %.2f s under tcg "
            "(nested virtualisation?); using tcg",
            kvm,
            tcg if tcg is not None else float("nan"),
        )
    with contextlib.suppress(OSError):  # no cache: the next start probes again
        _write_cache(cache, {"qemu_version": qemu_version, "rule": RULE, "boot": boot, "binary": binary,
                             "accel": accel, "kvm_seconds": kvm, "tcg_seconds": tcg})  # fmt: skip
    return AccelChoice(accel, _probe_reason(kvm, tcg))


async def choose_accel(requested: str, qemu_binary: str, qemu_version: str, cache_dir: Path) -> str:
    return (await probe_accel(requested, qemu_binary, qemu_version, cache_dir)).accel


async def qemu_system_version(qemu_binary: str) -> str:
    """The first line of `qemu-system-… --version` ("QEMU emulator version 7.2.22 (…)")."""
    try:
        out = await run_tool([qemu_binary, "--version"], timeout=10, error="qemu-system failed")
    except (FileNotFoundError, PermissionError, DriverError):
        return "unavailable"
    return out.splitlines()[0] if out else "unknown"


async def _best_times(qemu_binary: str) -> tuple[float | None, float | None]:
    """The fastest of PROBE_ROUNDS alternating boots per accelerator (a KVM that never answers is
    not tried again, and then TCG's time is not needed)."""
    kvm_times: list[float] = []
    tcg_times: list[float] = []
    for _ in range(PROBE_ROUNDS):
        kvm = await _boot_probe(qemu_binary, "kvm")
        if kvm is None:
            return None, None
        kvm_times.append(kvm)
        tcg = await _boot_probe(qemu_binary, "tcg")
        if tcg is not None:
            tcg_times.append(tcg)
    return min(kvm_times), min(tcg_times, default=None)


def kvm_is_fast_enough(kvm_seconds: float | None, tcg_seconds: float | None) -> bool:
    """KVM when it booted the probe and was not much slower than TCG (no TCG answer: trust KVM)."""
    if kvm_seconds is None:
        return False
    if tcg_seconds is None:
        return True
    return kvm_seconds <= KVM_SLOWDOWN_ALLOWED * tcg_seconds + KVM_SLACK_SECONDS
