"""The Driver protocol: what the host agent (agent/local.py) asks of a hypervisor.

Every path here is derived from a VM or image id by the driver itself; no user text reaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class BootMedia:
    """What an image contributes to a VM: a base disk, a kernel pair, or an installer ISO."""

    base_disk: Path | None = None
    base_format: str | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    kernel_cmdline: str | None = None
    cdrom: Path | None = None


@dataclass(frozen=True)
class VMSpec:
    vm_id: str
    cpu: int
    memory_mb: int
    media: BootMedia
    ssh_port: int | None


@dataclass(frozen=True)
class VMStats:
    cpu_percent: float
    memory_used_mb: float
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int | None
    net_tx_bytes: int | None
    uptime_seconds: float


# Called when a VM's process ends: (vm_id, pid, clean, reason). `clean` means a shutdown the guest
# or VoidVM asked for; otherwise the process died (killed, crashed) and `reason` says how.
ExitHandler = Callable[[str, int, bool, str], None]
# Called when the hypervisor pauses a guest on its own: (vm_id, reason).
PauseHandler = Callable[[str, str], None]
# Called with each chunk of a running VM's serial output: (vm_id, data). Must not block.
ConsoleHandler = Callable[[str, bytes], None]

# A disk write that finds the host's disk full pauses the guest instead of failing inside it.
DISK_FULL_REASON = "the host's disk is full; free space on the host, then resume the VM"


class Driver(Protocol):
    accel: str

    def set_exit_handler(self, handler: ExitHandler) -> None: ...
    def set_pause_handler(self, handler: PauseHandler) -> None: ...
    def set_console_handler(self, handler: ConsoleHandler) -> None: ...

    async def prepare_disk(self, vm_id: str, media: BootMedia, size_gb: int) -> None: ...
    def has_disk(self, vm_id: str) -> bool: ...
    async def grow_disk(self, vm_id: str, size_gb: int) -> None: ...
    def disk_allocated_bytes(self, vm_id: str) -> int | None: ...
    async def destroy(self, vm_id: str) -> None: ...

    async def start(self, spec: VMSpec) -> int: ...
    async def attach(self, vm_id: str) -> int | None: ...
    def is_running(self, vm_id: str) -> bool: ...
    async def powerdown(self, vm_id: str) -> None: ...
    async def kill(self, vm_id: str) -> None: ...
    async def wait_exit(self, vm_id: str, timeout: float) -> bool: ...
    async def pause(self, vm_id: str) -> None: ...
    async def resume(self, vm_id: str) -> None: ...
    async def reset(self, vm_id: str) -> None: ...
    async def query_status(self, vm_id: str) -> str: ...
    async def stats(self, vm_id: str) -> VMStats: ...
    def console_recent(self, vm_id: str) -> bytes: ...
    async def console_write(self, vm_id: str, data: bytes) -> None: ...

    def run_dir(self, vm_id: str) -> Path: ...
    def vnc_socket(self, vm_id: str) -> Path: ...
    def console_log(self, vm_id: str) -> Path: ...
    def known_run_dirs(self) -> list[str]: ...
    async def close(self) -> None: ...
