"""The /ws wire format: the envelope, the client messages' data, the close codes.

Client → server `{type, data, id?}`; server → client `{type, data, id, timestamp}` where `id`
echoes the request's id on replies and is null on pushed events. docs/websocket.md is the contract.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from voidvm_server.api.errors import status_for
from voidvm_server.errors import VoidVMError

# Close codes (RFC 6455 ones, and 4000+ application ones mirroring HTTP statuses).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # too many sockets for this user, refused Origin
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013  # server at capacity, or the client reads too slowly
CLOSE_UNAUTHORIZED = 4401  # no, bad, expired or revoked credentials
CLOSE_NOT_FOUND = 4404  # raw streams: no such VM (for this user)
CLOSE_CONFLICT = 4409  # raw streams: the VM is not running

MessageId = Annotated[str, Field(max_length=128)] | int | None
VmId = Annotated[str, Field(min_length=1, max_length=64)]
Topic = Literal["vm-status", "vm-status-all", "system-event", "operations", "vm-metrics", "system-monitor"]
Action = Literal["start", "stop", "restart", "pause", "resume", "reset"]
MIN_INTERVAL, MAX_INTERVAL, DEFAULT_INTERVAL = 1.0, 3600.0, 5.0


class ProtocolError(VoidVMError):
    """A message the server cannot act on; answered with `error`, the socket stays open."""

    code = "BAD_REQUEST"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Annotated[str, Field(min_length=1, max_length=64)]
    data: dict[str, Any] | None = None
    id: MessageId = None


class AuthData(_Data):
    token: Annotated[str, Field(min_length=1, max_length=4096)]


class SubscribeData(_Data):
    topic: Topic
    vmId: VmId | None = None
    interval: Annotated[float, Field(gt=0, le=MAX_INTERVAL)] | None = None
    lastEventId: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _needs_vm(self) -> SubscribeData:
        if self.topic in ("vm-status", "vm-metrics") and self.vmId is None:
            raise ValueError(f"the topic '{self.topic}' needs a vmId")
        if self.topic not in ("vm-status", "vm-metrics") and self.vmId is not None:
            raise ValueError(f"the topic '{self.topic}' takes no vmId")
        return self

    @property
    def period(self) -> float:
        """The sampling interval in seconds, bounded below at 1 s."""
        return max(MIN_INTERVAL, self.interval if self.interval is not None else DEFAULT_INTERVAL)


class UnsubscribeData(_Data):
    topic: Topic
    vmId: VmId | None = None


class VMControlData(_Data):
    vmId: VmId
    action: Action
    force: bool = False
    timeout: Annotated[float, Field(ge=0, le=3600)] | None = None  # 0: kill at once, as `force`


class TerminalConnectData(_Data):
    vmId: VmId
    type: Literal["serial"] = "serial"
    cols: Annotated[int, Field(ge=1, le=1000)] | None = None
    rows: Annotated[int, Field(ge=1, le=1000)] | None = None


class TerminalInputData(_Data):
    vmId: VmId
    input: str


class TerminalResizeData(_Data):
    vmId: VmId
    cols: Annotated[int, Field(ge=1, le=1000)]
    rows: Annotated[int, Field(ge=1, le=1000)]


class TerminalDisconnectData(_Data):
    vmId: VmId


class PingData(BaseModel):
    model_config = ConfigDict(extra="allow")


DATA_MODELS: dict[str, type[BaseModel]] = {
    "auth": AuthData,
    "subscribe": SubscribeData,
    "unsubscribe": UnsubscribeData,
    "vm-control": VMControlData,
    "terminal-connect": TerminalConnectData,
    "terminal-input": TerminalInputData,
    "terminal-resize": TerminalResizeData,
    "terminal-disconnect": TerminalDisconnectData,
    "ping": PingData,
}


def _issues(exc: PydanticValidationError, prefix: str) -> list[dict[str, str]]:
    issues = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        reason = "unknown field" if err.get("type") == "extra_forbidden" else str(err.get("msg", "invalid"))
        issues.append({"field": f"{prefix}.{where}" if where else prefix, "reason": reason})
    return issues


def parse(raw: str) -> tuple[Envelope, BaseModel]:
    """Parse one client message. Raises ProtocolError (with the id, when there is one)."""
    try:
        payload = json.loads(raw)
    except ValueError:
        raise ProtocolError("The message is not valid JSON") from None
    try:
        envelope = Envelope.model_validate(payload)
    except PydanticValidationError as exc:
        raise ProtocolError(
            "A message is an object {type, data, id?}",
            code="VALIDATION_ERROR",
            details=_issues(exc, "message"),
        ) from None
    model = DATA_MODELS.get(envelope.type)
    if model is None:
        known = ", ".join(sorted(DATA_MODELS))
        raise ProtocolError(
            f"Unknown message type '{envelope.type}'; use one of: {known}", code="UNKNOWN_MESSAGE_TYPE"
        )
    try:
        return envelope, model.model_validate(envelope.data or {})
    except PydanticValidationError as exc:
        raise ProtocolError(
            f"Invalid '{envelope.type}' message", code="VALIDATION_ERROR", details=_issues(exc, "data")
        ) from None


def peek_id(raw: str) -> str | int | None:
    """The id of a message that failed to parse, so that its error can still echo it."""
    try:
        value = json.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message(type: str, data: dict[str, Any], id: str | int | None = None) -> dict[str, Any]:
    return {"type": type, "data": data, "id": id, "timestamp": timestamp()}


def error_data(exc: VoidVMError, vm_id: str | None = None) -> dict[str, Any]:
    """`error` data for a domain error: the REST code and message; details hidden for 5xx kinds."""
    data: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if vm_id is not None:
        data["vmId"] = vm_id
    if exc.details is not None and (isinstance(exc, ProtocolError) or status_for(exc) < 500):
        data["details"] = exc.details
    return data


def encode(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"), default=str)
