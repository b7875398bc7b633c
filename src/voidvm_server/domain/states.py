"""The VM state machine: which status may move to which, and the error to give when not."""

from __future__ import annotations

from voidvm_server.domain.models import VMStatus
from voidvm_server.errors import IllegalTransitionError, InvalidStateError

S = VMStatus

TRANSITIONS: dict[VMStatus, frozenset[VMStatus]] = {
    S.CREATING: frozenset({S.STOPPED, S.ERROR, S.DELETING}),
    S.STOPPED: frozenset({S.STARTING, S.DELETING, S.ERROR}),
    # paused: a restarted server found the guest paused by QEMU (a full disk) during a start
    S.STARTING: frozenset({S.RUNNING, S.PAUSED, S.ERROR, S.STOPPED}),
    S.RUNNING: frozenset({S.STOPPING, S.PAUSED, S.REBOOTING, S.ERROR, S.STOPPED}),
    # back to running or paused: QEMU did not answer; deleting: a forced delete of a running VM
    S.STOPPING: frozenset({S.STOPPED, S.ERROR, S.RUNNING, S.PAUSED, S.DELETING}),
    S.PAUSED: frozenset({S.RUNNING, S.STOPPING, S.ERROR, S.STOPPED}),
    S.REBOOTING: frozenset({S.RUNNING, S.PAUSED, S.ERROR, S.STOPPED}),
    S.DELETING: frozenset({S.ERROR}),
    # running or paused: a restarted server found the VM's QEMU alive after all
    S.ERROR: frozenset({S.STARTING, S.DELETING, S.STOPPED, S.RUNNING, S.PAUSED}),
}

# States an action may start from, with the specific code for the common mistakes.
ACTION_SOURCES: dict[str, frozenset[VMStatus]] = {
    "start": frozenset({S.STOPPED, S.ERROR}),
    "stop": frozenset({S.RUNNING, S.PAUSED}),
    "restart": frozenset({S.RUNNING}),
    "pause": frozenset({S.RUNNING}),
    "resume": frozenset({S.PAUSED}),
    "reset": frozenset({S.RUNNING, S.PAUSED}),
    "delete": frozenset({S.STOPPED, S.ERROR}),
    "update_hardware": frozenset({S.STOPPED, S.ERROR}),
}

BUSY = frozenset({S.CREATING, S.STARTING, S.STOPPING, S.REBOOTING, S.DELETING})


def check_action(action: str, current: VMStatus) -> None:
    """Raise the right 409 when `action` is not allowed from `current`."""
    if current in ACTION_SOURCES[action]:
        return
    if current in BUSY:
        raise InvalidStateError(
            f"The VM is {current.value}; try again when that finishes",
            code="OPERATION_IN_PROGRESS",
            current=current.value,
        )
    if action == "start" and current in {S.RUNNING, S.PAUSED}:
        raise InvalidStateError("The VM is already running", code="VM_ALREADY_RUNNING", current=current.value)
    if current in {S.STOPPED, S.ERROR} and action in {"stop", "restart", "pause", "reset"}:
        raise InvalidStateError("The VM is not running", code="VM_NOT_RUNNING", current=current.value)
    if action in {"delete", "update_hardware"}:
        raise InvalidStateError(
            f"The VM must be stopped first (it is {current.value})",
            code="INVALID_STATE",
            current=current.value,
        )
    raise InvalidStateError(
        f"Cannot {action} a VM that is {current.value}", code="INVALID_STATE", current=current.value
    )


def can_move(current: VMStatus, target: VMStatus) -> bool:
    """Staying in a status (a new reason, a new pid) is always a legal move."""
    return target is current or target in TRANSITIONS[current]


def check_move(current: VMStatus, target: VMStatus) -> None:
    if not can_move(current, target):
        raise IllegalTransitionError(current.value, target.value)
