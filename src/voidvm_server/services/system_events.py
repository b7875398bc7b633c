"""The human-level `system-event` a VM state change makes.

`vm-status` says what state a VM is in; a system event says what happened and who did it:
`{event: "vm.started", vmId, userId (the VM's owner), actor (who acted, null for the system),
message, level}`. Intermediate states (`starting`, `stopping`, ...) produce none.

The state store writes it in the same transaction as the `vm-status` event, right after it, so
every process serving the API tells of each change once and in order.
"""

from __future__ import annotations

from typing import Any

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


def lifecycle_event(status: dict[str, Any], *, vm_id: str, owner_id: str) -> dict[str, Any] | None:
    """The `system-event` a `vm-status` change makes, or None (intermediate states). Called by
    the writer of the change, in its context: the acting user is read from the request there."""
    name = describe(status)
    if name is None:
        return None
    prompted = (status.get("previous"), status.get("status")) not in UNPROMPTED
    actor = context.user_name.get() if prompted else None
    reason = status.get("reason")
    message = f"VM {vm_id} {WORDS[name]}" + (f" by {actor}" if actor else "")
    if reason:
        message += f": {reason}"
    return {
        "event": name,
        "vmId": vm_id,
        "userId": owner_id,
        "actor": actor,
        "message": message,
        "level": "error" if name == "vm.error" else "info",
    }
