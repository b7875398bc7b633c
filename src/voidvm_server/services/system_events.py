"""LifecycleEvents: turns VM state changes into human-level `system-event`s on the bus.

`vm-status` says what state a VM is in; a system event says what happened and who did it:
`{event: "vm.started", vmId, userId (the VM's owner), actor (who acted, null for the system),
message, level}`. Intermediate states (`starting`, `stopping`, ...) produce none.

The bus calls listeners synchronously inside `publish`, in the publisher's context: the acting
user is read from the request context there. The derived event is published on the next loop
iteration, after every listener has seen the state change, so ids stay in delivery order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from voidvm_server.events.bus import Event, EventBus
from voidvm_server.services import context

# (previous, status) → event name; previous None matches any.
TRANSITIONS: list[tuple[str | None, str, str]] = [
    ("creating", "stopped", "vm.created"),
    ("starting", "running", "vm.started"),
    ("rebooting", "running", "vm.restarted"),
    ("paused", "running", "vm.resumed"),
    ("running", "paused", "vm.paused"),
    ("stopping", "stopped", "vm.stopped"),
    ("running", "stopped", "vm.stopped"),
    ("paused", "stopped", "vm.stopped"),
    (None, "error", "vm.error"),
    (None, "deleted", "vm.deleted"),
]
# Changes nobody asked for (the guest powered off, QEMU died): no actor, whatever the context says.
UNPROMPTED = frozenset(
    {("running", "stopped"), ("paused", "stopped"), ("running", "error"), ("paused", "error")}
)
WORDS = {
    "vm.created": "created", "vm.started": "started", "vm.restarted": "restarted",
    "vm.resumed": "resumed", "vm.paused": "paused", "vm.stopped": "stopped",
    "vm.error": "failed", "vm.deleted": "deleted",
}  # fmt: skip


def describe(data: dict[str, Any]) -> str | None:
    previous, status = data.get("previous"), data.get("status")
    for before, after, name in TRANSITIONS:
        if status == after and (before is None or before == previous):
            return name
    return None


class LifecycleEvents:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._unlisten: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._unlisten = self.bus.listen(self._on_event)

    def stop(self) -> None:
        self._unlisten()

    def _on_event(self, event: Event) -> None:
        if event.kind != "vm-status":
            return
        name = describe(event.data)
        if name is None:
            return
        prompted = (event.data.get("previous"), event.data.get("status")) not in UNPROMPTED
        actor = context.user_name.get() if prompted else None
        reason = event.data.get("reason")
        message = f"VM {event.vm_id} {WORDS[name]}" + (f" by {actor}" if actor else "")
        if reason:
            message += f": {reason}"
        data = {
            "event": name,
            "vmId": event.vm_id,
            "userId": event.owner_id,
            "actor": actor,
            "message": message,
            "level": "error" if name == "vm.error" else "info",
        }
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._publish(data, event)
            return
        loop.call_soon(self._publish, data, event)

    def _publish(self, data: dict[str, Any], cause: Event) -> None:
        self.bus.publish("system-event", data, vm_id=cause.vm_id, owner_id=cause.owner_id)
