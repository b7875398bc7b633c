"""ConsoleHub: each running VM's serial output fanned out to its viewers, their input sent in.

The host agent holds the one connection to a running VM's serial port, from before the guest's
first byte until QEMU exits, and saves the output to the VM's bounded, rotated log (drivers/qemu/
console.py). Every chunk reaches the hub as a ConsoleOutput event, which it copies to the viewers
of that VM. A viewer that attaches first gets the recent output (the agent's replay buffer,
`console_replay_bytes`), then everything live. Each chunk carries where it ends in the VM's output,
and the replay says where it ends too, so nothing is lost or repeated in between, however long
the agent takes to answer.

Viewers stay attached across a stop, start or restart and see the next run from its first byte.
Slow viewers never slow the guest: `on_output` only queues (each viewer bounds its own queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from voidvm_server.agent.port import ConsoleOutput, EventFeed, HostAgent, HostReconnected
from voidvm_server.errors import InvalidStateError
from voidvm_server.events.bus import Event, EventBus

log = logging.getLogger(__name__)


class ConsoleViewer(Protocol):
    def on_output(self, data: bytes) -> None:
        """Guest output; must not block (queue it)."""

    def on_closed(self, code: str, reason: str) -> None:
        """The console is gone for good: `VM_NOT_FOUND` (deleted) or `SERVICE_UNAVAILABLE` (the
        server is stopping)."""


@dataclass
class _Attachment:
    viewer: ConsoleViewer
    held: int | None = None  # where the replay it was given ends; None while that is asked for
    pending: list[ConsoleOutput] = field(default_factory=list)  # live chunks meanwhile

    def deliver(self, chunk: ConsoleOutput) -> None:
        if self.held is None:
            self.pending.append(chunk)
        elif chunk.end > self.held:  # replays end on a chunk's end: a chunk is all new or all held
            self.viewer.on_output(chunk.data)

    def host_came_back(self) -> None:
        """A new agent counts the VM's output from 0 again: everything it sends is new."""
        if self.held is not None:
            self.held = 0

    def replay(self, recent: bytes, held: int) -> bytes:
        """What the viewer shows first: the replay, then what arrived while it was fetched."""
        self.held = held
        pending, self.pending = self.pending, []
        return recent + b"".join(chunk.data for chunk in pending if chunk.end > held)


class ConsoleHub:
    def __init__(self, agent: HostAgent, bus: EventBus) -> None:
        self.agent = agent
        self.bus = bus
        self._viewers: dict[str, list[_Attachment]] = {}
        self._unlisten: Callable[[], None] = lambda: None
        self._feed: EventFeed | None = None
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._feed = self.agent.subscribe()
        self._reader = asyncio.create_task(self._read(self._feed), name="console-output")
        self._unlisten = self.bus.listen(self._on_event)

    async def _read(self, feed: EventFeed) -> None:
        while True:
            event = await feed.next()
            if isinstance(event, HostReconnected):
                for attachments in self._viewers.values():
                    for attached in attachments:
                        attached.host_came_back()
                continue
            if not isinstance(event, ConsoleOutput):
                continue
            for attached in list(self._viewers.get(event.vm_id, ())):
                try:
                    attached.deliver(event)
                except Exception:  # one viewer's bug must not silence the others
                    log.exception("A console viewer of %s failed", event.vm_id)

    async def attach(self, vm_id: str, viewer: ConsoleViewer) -> bytes:
        """Attach a viewer to a running VM; returns the recent output to show it first. Live
        output reaches `viewer.on_output` from the moment this returns."""
        if not await self.agent.is_running(vm_id):
            raise InvalidStateError("The VM is not running", code="VM_NOT_RUNNING", current="stopped")
        attached = _Attachment(viewer)
        self._viewers.setdefault(vm_id, []).append(attached)
        try:
            recent, held = await self.agent.console_recent(vm_id)
        except BaseException:
            await self.detach(vm_id, viewer)
            raise
        return attached.replay(recent, held)

    async def detach(self, vm_id: str, viewer: ConsoleViewer) -> None:
        """Detach a viewer. The VM and the recording of its console are left untouched."""
        viewers = [attached for attached in self._viewers.get(vm_id, []) if attached.viewer is not viewer]
        if viewers:
            self._viewers[vm_id] = viewers
        else:
            self._viewers.pop(vm_id, None)

    async def write(self, vm_id: str, data: bytes) -> None:
        if vm_id not in self._viewers:
            raise InvalidStateError(
                "Attach to the console first", code="CONSOLE_NOT_ATTACHED", current="detached"
            )
        await self.agent.console_write(vm_id, data)

    def viewer_count(self, vm_id: str) -> int:
        return len(self._viewers.get(vm_id, ()))

    async def saved_output(self, vm_id: str, limit: int) -> tuple[bytes, int]:
        """The last `limit` bytes of the VM's saved console log, and how many bytes it holds."""
        return await self.agent.console_saved(vm_id, limit)

    def _on_event(self, event: Event) -> None:
        if event.kind != "vm-status" or event.data.get("status") != "deleted":
            return
        for attached in self._viewers.pop(event.vm_id or "", []):
            attached.viewer.on_closed("VM_NOT_FOUND", "the VM was deleted")

    async def close(self) -> None:
        self._unlisten()
        if self._feed is not None:
            self._feed.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        viewers, self._viewers = self._viewers, {}
        for attachments in viewers.values():
            for attached in attachments:
                attached.viewer.on_closed("SERVICE_UNAVAILABLE", "the server is shutting down")
