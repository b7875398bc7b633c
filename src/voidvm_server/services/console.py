"""ConsoleHub: each running VM's serial output fanned out to its viewers, their input sent in.

The driver holds the one connection to a running VM's serial port, from before the guest's first
byte until QEMU exits, and saves the output to the VM's bounded, rotated log (drivers/qemu/
console.py). It hands every chunk to the hub, which copies it to the viewers of that VM. A viewer
that attaches first gets the recent output (the driver's replay buffer, `console_replay_bytes`),
then everything live: both happen in one step of the event loop, so nothing is lost or repeated
in between.

Viewers stay attached across a stop, start or restart and see the next run from its first byte.
Slow viewers never slow the guest: `on_output` only queues (each viewer bounds its own queue).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from voidvm_server.drivers.base import Driver
from voidvm_server.drivers.console_log import read_tail
from voidvm_server.errors import InvalidStateError
from voidvm_server.events.bus import Event, EventBus


class ConsoleViewer(Protocol):
    def on_output(self, data: bytes) -> None:
        """Guest output; must not block (queue it)."""

    def on_closed(self, code: str, reason: str) -> None:
        """The console is gone for good: `VM_NOT_FOUND` (deleted) or `SERVICE_UNAVAILABLE` (the
        server is stopping)."""


class ConsoleHub:
    def __init__(self, driver: Driver, bus: EventBus) -> None:
        self.driver = driver
        self.bus = bus
        self._viewers: dict[str, list[ConsoleViewer]] = {}
        self._unlisten: Callable[[], None] = lambda: None

    def start(self) -> None:
        self.driver.set_console_handler(self._fan_out)
        self._unlisten = self.bus.listen(self._on_event)

    async def attach(self, vm_id: str, viewer: ConsoleViewer) -> bytes:
        """Attach a viewer to a running VM; returns the recent output to show it first."""
        if not self.driver.is_running(vm_id):
            raise InvalidStateError("The VM is not running", code="VM_NOT_RUNNING", current="stopped")
        self._viewers.setdefault(vm_id, []).append(viewer)
        return self.driver.console_recent(vm_id)

    async def detach(self, vm_id: str, viewer: ConsoleViewer) -> None:
        """Detach a viewer. The VM and the recording of its console are left untouched."""
        viewers = self._viewers.get(vm_id, [])
        with contextlib.suppress(ValueError):
            viewers.remove(viewer)
        if not viewers:
            self._viewers.pop(vm_id, None)

    async def write(self, vm_id: str, data: bytes) -> None:
        if vm_id not in self._viewers:
            raise InvalidStateError(
                "Attach to the console first", code="CONSOLE_NOT_ATTACHED", current="detached"
            )
        await self.driver.console_write(vm_id, data)

    def viewer_count(self, vm_id: str) -> int:
        return len(self._viewers.get(vm_id, ()))

    async def saved_output(self, vm_id: str, limit: int) -> tuple[bytes, int]:
        """The last `limit` bytes of the VM's saved console log, and how many bytes it holds."""
        return await asyncio.to_thread(read_tail, self.driver.console_log(vm_id), limit)

    def _fan_out(self, vm_id: str, data: bytes) -> None:
        for viewer in list(self._viewers.get(vm_id, ())):
            viewer.on_output(data)

    def _on_event(self, event: Event) -> None:
        if event.kind != "vm-status" or event.data.get("status") != "deleted":
            return
        for viewer in self._viewers.pop(event.vm_id or "", []):
            viewer.on_closed("VM_NOT_FOUND", "the VM was deleted")

    async def close(self) -> None:
        self._unlisten()
        self.driver.set_console_handler(lambda vm_id, data: None)
        viewers, self._viewers = self._viewers, {}
        for attached in viewers.values():
            for viewer in attached:
                viewer.on_closed("SERVICE_UNAVAILABLE", "the server is shutting down")
