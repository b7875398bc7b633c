"""How the HostAgent port's values cross the agent's socket: one JSON document per line.

A connection starts with a hello line naming what it is for: `rpc` (the agent answers with its
accelerator, then calls and their answers, matched by id, many at once), `events` (the agent
answers `{"ok": true}` once subscribed, then pushes its events), or `vnc` (one VM's screen: after
the agent's `{"ok": true}`, raw RFB bytes both ways). Bytes travel as base64. Errors travel
as the class of VoidVM's error tree they are (only the ones a host can raise) with code, message
and details, so a caller catches them exactly as it would in one process.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from voidvm_server.agent.port import (
    AgentEvent,
    ConsoleOutput,
    HostReconnected,
    ImageRef,
    VMExited,
    VMPaused,
    VMPlan,
    VMStats,
)
from voidvm_server.errors import (
    DriverError,
    HypervisorTimeoutError,
    HypervisorUnavailableError,
    InsufficientStorageError,
    InvalidStateError,
    StorageError,
    VoidVMError,
)

MAX_LINE = 16 * 1024 * 1024  # a console chunk, a saved console of the largest allowed tail
# Most specific first: an error of another class crosses as the first of these it is.
ERRORS: list[type[VoidVMError]] = [
    HypervisorTimeoutError,
    HypervisorUnavailableError,
    DriverError,
    InsufficientStorageError,
    StorageError,
    InvalidStateError,
]


def dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def loads(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("a message is a JSON object")
    return value


def pack_bytes(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unpack_bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def pack_image(image: ImageRef) -> dict[str, Any]:
    return dataclasses.asdict(image)


def pack_plan(plan: VMPlan) -> dict[str, Any]:
    return dataclasses.asdict(plan)


FORMATS = frozenset({"qcow2", "raw", "iso", "kernel"})


def unpack_image(data: dict[str, Any]) -> ImageRef:
    if data.get("format") not in FORMATS:
        raise ValueError("unknown image format")
    files = data["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ValueError("image files are names")
    return ImageRef(str(data["image_id"]), str(data["format"]), dict(files), data.get("kernel_cmdline"))


def unpack_plan(data: dict[str, Any]) -> VMPlan:
    port = data.get("ssh_port")
    return VMPlan(str(data["vm_id"]), int(data["cpu"]), int(data["memory_mb"]), unpack_image(data["image"]),
                  int(port) if port is not None else None)  # fmt: skip


def pack_stats(stats: VMStats) -> dict[str, Any]:
    return dataclasses.asdict(stats)


def unpack_stats(data: dict[str, Any]) -> VMStats:
    return VMStats(**data)


def pack_event(event: AgentEvent) -> dict[str, Any]:
    if isinstance(event, HostReconnected):
        raise ValueError("a client's own event: it never crosses the socket")
    if isinstance(event, ConsoleOutput):
        return {"type": "console", "vm_id": event.vm_id, "data": pack_bytes(event.data), "end": event.end}
    if isinstance(event, VMExited):
        return {"type": "exited", "vm_id": event.vm_id, "pid": event.pid, "clean": event.clean,
                "reason": event.reason}  # fmt: skip
    return {"type": "paused", "vm_id": event.vm_id, "reason": event.reason}


def unpack_event(data: dict[str, Any]) -> AgentEvent:
    kind, vm_id = data["type"], str(data["vm_id"])
    if kind == "console":
        return ConsoleOutput(vm_id, unpack_bytes(data["data"]), int(data["end"]))
    if kind == "exited":
        return VMExited(vm_id, int(data["pid"]), bool(data["clean"]), str(data["reason"]))
    if kind == "paused":
        return VMPaused(vm_id, str(data["reason"]))
    raise ValueError(f"unknown event {kind!r}")


def pack_error(exc: VoidVMError) -> dict[str, Any]:
    cls = next((c for c in ERRORS if isinstance(exc, c)), DriverError)
    packed = {"class": cls.__name__, "code": exc.code, "message": exc.message, "details": exc.details}
    if isinstance(exc, InvalidStateError):
        packed["current"] = exc.current
    return packed


def unpack_error(data: dict[str, Any]) -> VoidVMError:
    cls = next((c for c in ERRORS if c.__name__ == data.get("class")), DriverError)
    message = str(data.get("message") or "The host agent failed")
    if cls is InvalidStateError:
        return InvalidStateError(message, code=data.get("code"), current=str(data.get("current")))
    return cls(message, code=data.get("code"), details=data.get("details"))
