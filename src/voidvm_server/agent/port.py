"""HostAgent: everything the services ask of the host that runs their VMs, as one port.

Values in, values out, as a transport would carry them: ids, numbers, bytes and frozen records,
never a callback and never a path of this host to open (the VNC screen comes back as a stream).
What happens on the host by itself (a QEMU exits, pauses, prints) travels as events that each
subscriber reads from its own feed. Today the one implementation runs in the server's process
(local.py, around a Driver); the agent process of issue 14 serves the same port over its socket.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from voidvm_server.drivers.base import DISK_FULL_REASON, VMStats

__all__ = [
    "DISK_FULL_REASON",
    "AgentEvent",
    "ConsoleOutput",
    "EventFeed",
    "HostAgent",
    "HostReconnected",
    "ImageRef",
    "VMExited",
    "VMPaused",
    "VMPlan",
    "VMStats",
]


@dataclass(frozen=True)
class ImageRef:
    """What a VM boots from, by name: the host finds the files in its own image store. `files`
    maps a role (`disk`, `kernel`, `initrd`) to a file name in the image's directory."""

    image_id: str
    format: str  # qcow2, raw, iso or kernel
    files: dict[str, str]
    kernel_cmdline: str | None = None


@dataclass(frozen=True)
class VMPlan:
    """A VM to start: its size, what it boots and the loopback port its SSH is forwarded from."""

    vm_id: str
    cpu: int
    memory_mb: int
    image: ImageRef
    ssh_port: int | None


@dataclass(frozen=True)
class VMExited:
    """A VM's process (`pid`) ended. `clean`: a shutdown the guest or VoidVM asked for; otherwise
    it died (killed, crashed) and `reason` says how."""

    vm_id: str
    pid: int
    clean: bool
    reason: str


@dataclass(frozen=True)
class VMPaused:
    """The hypervisor paused a guest on its own (a disk write found the host's disk full)."""

    vm_id: str
    reason: str


@dataclass(frozen=True)
class ConsoleOutput:
    """A chunk of a running VM's serial output, as the guest wrote it. `end` is where the chunk
    ends in everything the VM ever printed on this host: a viewer given the recent output up to
    some position skips the chunks it already holds."""

    vm_id: str
    data: bytes
    end: int


@dataclass(frozen=True)
class HostReconnected:
    """The host came back after a time its events could not be heard (an agent restarted):
    exits of that time may be missed, and console positions start again from 0."""


AgentEvent = VMExited | VMPaused | ConsoleOutput | HostReconnected


class EventFeed(Protocol):
    """One subscriber's events, in the order they happened, from its subscription on."""

    async def next(self) -> AgentEvent:
        """The next event; waits for one."""

    def close(self) -> None:
        """Stop receiving; events not read yet are dropped."""


class HostAgent(Protocol):
    accel: str  # the accelerator this host's VMs run under: kvm, tcg (or fake)

    def subscribe(self) -> EventFeed: ...

    # -- disks ---------------------------------------------------------------------------------
    async def prepare_disk(self, vm_id: str, image: ImageRef, size_gb: int) -> None: ...
    async def has_disk(self, vm_id: str) -> bool: ...
    async def grow_disk(self, vm_id: str, size_gb: int) -> None: ...
    async def disk_allocated_bytes(self, vm_id: str) -> int | None: ...
    async def destroy(self, vm_id: str) -> None:
        """Remove everything of the VM on this host: process, disk, run directory."""

    # -- processes -----------------------------------------------------------------------------
    async def start(self, plan: VMPlan) -> int:
        """Start the VM; its pid."""

    async def attach(self, vm_id: str) -> int | None:
        """Find a VM's process left running by an earlier server; its pid, or None."""

    async def known_vms(self) -> list[str]:
        """Ids of every VM this host holds files for."""

    async def is_running(self, vm_id: str) -> bool: ...
    async def powerdown(self, vm_id: str) -> None: ...
    async def kill(self, vm_id: str) -> None: ...
    async def wait_exit(self, vm_id: str, timeout: float) -> bool: ...
    async def pause(self, vm_id: str) -> None: ...
    async def resume(self, vm_id: str) -> None: ...
    async def reset(self, vm_id: str) -> None: ...
    async def query_status(self, vm_id: str) -> str: ...
    async def stats(self, vm_id: str) -> VMStats: ...

    # -- consoles ------------------------------------------------------------------------------
    async def console_recent(self, vm_id: str) -> tuple[bytes, int]:
        """The recent serial output kept for a viewer that attaches now (empty when stopped), and
        the position of its end (as ConsoleOutput.end counts)."""

    async def console_write(self, vm_id: str, data: bytes) -> None: ...
    async def console_saved(self, vm_id: str, limit: int) -> tuple[bytes, int]:
        """The last `limit` bytes of the VM's saved serial log, and how many bytes it holds."""

    async def open_vnc(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to the VM's VNC server (RFB from its first byte)."""

    async def close(self) -> None: ...
