"""The response shapes, for the OpenAPI document only.

The routes answer with the dicts built in `presenters.py` (the single source of the JSON) inside the
envelope of `envelope.py`; these models only *describe* those dicts. They are referenced from the
route decorators through `responses=` (never `response_model=`), so nothing is validated or
re-serialised at run time. `extra="forbid"` makes tests/unit/test_response_models.py fail when a
presenter gains a field the model lacks, and the SDK drift test compares them with the SDK types.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from voidvm_server.domain.models import ImageFormat, ImageStatus, Role, UserStatus, VMStatus
from voidvm_server.domain.operations import OperationStatus
from voidvm_server.services.live_config import LiveConfig

__all__ = [
    "ERROR_RESPONSES",
    "AcceptedEnvelope",
    "ApiTokenList",
    "ApiTokenPublic",
    "AuditEntryPublic",
    "AuditLogList",
    "ConsoleLog",
    "ConsoleTicket",
    "CreatedApiToken",
    "DeletedVM",
    "EmptyEnvelope",
    "Envelope",
    "ErrorBody",
    "ErrorEnvelope",
    "HealthStatus",
    "ImageList",
    "ImagePublic",
    "LiveConfig",
    "LoginData",
    "LoginEnvelope",
    "OperationList",
    "OperationPublic",
    "Pagination",
    "PermissionList",
    "ReadyStatus",
    "RoleList",
    "SystemInfo",
    "SystemStats",
    "UserList",
    "UserPublic",
    "VMList",
    "VMLiveStatus",
    "VMMetrics",
    "VMPublic",
    "VersionInfo",
]

T = TypeVar("T")

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
        description="UTC, ISO 8601 to the second",
        examples=["2024-01-01T12:00:00Z"],
    ),
]


class Public(BaseModel):
    """A response object: exactly these fields, no others."""

    model_config = ConfigDict(extra="forbid")


# -- envelope ------------------------------------------------------------------------------------
class Envelope(Public, Generic[T]):
    """Every successful JSON answer."""

    success: Literal[True]
    data: T
    message: str = Field(examples=["OK"])
    timestamp: Timestamp


class EmptyEnvelope(Envelope[None]):
    """A success without data (`data` is null): logout, deletions, password change."""


class FieldError(Public):
    """One item of `details` for `VALIDATION_ERROR`."""

    field: str
    reason: str


class ErrorBody(Public):
    code: str = Field(examples=["VM_NOT_FOUND"])
    message: str
    details: list[FieldError] | str | dict[str, Any] | None = Field(
        description="a list of {field, reason} for VALIDATION_ERROR; otherwise a string, an object or null"
    )


class ErrorEnvelope(Public):
    """Every error answer."""

    success: Literal[False]
    error: ErrorBody
    timestamp: Timestamp


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


# Shared by every API route (see the status table in docs/api.md). "default" also stands for the
# rarer statuses (413, 415, 503, 504, 507); it keeps FastAPI from documenting a 422 the server never
# sends (request validation answers 400 VALIDATION_ERROR).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("VALIDATION_ERROR, BAD_REQUEST or INVALID_HOST"),
    401: _error("UNAUTHORIZED, INVALID_TOKEN, TOKEN_EXPIRED or INVALID_CREDENTIALS"),
    403: _error("FORBIDDEN, QUOTA_EXCEEDED, ACCOUNT_DISABLED"),
    404: _error("NOT_FOUND or <RESOURCE>_NOT_FOUND"),
    409: _error("VM_ALREADY_RUNNING, VM_NOT_RUNNING, INVALID_STATE, NAME_CONFLICT, IMAGE_IN_USE, ..."),
    429: _error("RATE_LIMIT_EXCEEDED, TOO_MANY_ATTEMPTS or LOGIN_BUSY (with Retry-After)"),
    500: _error("INTERNAL_SERVER_ERROR"),
    "default": _error("Any other error status (413, 415, 503, 504, 507), in the same envelope"),
}


class Pagination(Public):
    page: int
    limit: int
    total: int
    pages: int


# -- users and auth ------------------------------------------------------------------------------
class Quota(Public):
    max_vms: int
    max_cpus: int
    max_memory_mb: int
    max_disk_gb: int


class Usage(Public):
    """What the user's VMs take up, counted against the quota."""

    vms: int
    cpus: int
    memory_mb: int
    disk_gb: int


class UserPublic(Public):
    id: str = Field(examples=["usr-1a2b3c4d"])
    username: str
    email: str | None
    role: Role
    status: UserStatus
    quota: Quota
    usage: Usage
    created_at: Timestamp
    updated_at: Timestamp
    last_login_at: Timestamp | None


class UserList(Public):
    users: list[UserPublic]
    pagination: Pagination


class LoginData(Public):
    token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds")
    refresh_token: str
    user: UserPublic


class LoginEnvelope(Envelope[LoginData]):
    """The login answer also carries the access token at the top level."""

    token: str = Field(description="the same as data.token")


class ApiTokenPublic(Public):
    id: str = Field(examples=["tok-1a2b3c4d"])
    name: str
    prefix: str
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None


class CreatedApiToken(ApiTokenPublic):
    token: str = Field(description="the secret; shown only in this answer")


class ApiTokenList(Public):
    tokens: list[ApiTokenPublic]


class RoleInfo(Public):
    name: Role
    permissions: list[str]


class RoleList(Public):
    roles: list[RoleInfo]


class PermissionInfo(Public):
    id: str
    description: str


class PermissionList(Public):
    permissions: list[PermissionInfo]


# -- virtual machines ----------------------------------------------------------------------------
class VMPublic(Public):
    id: str = Field(examples=["vm-1a2b3c4d"])
    name: str
    description: str
    status: VMStatus
    status_reason: str | None
    cpu: int
    memory: int = Field(description="MB")
    disk: int = Field(description="GB")
    os: str = Field(description="the name the VM was created with (image name or alias)")
    image: str = Field(description="the image's id")
    owner: str = Field(description="the owner's username")
    owner_id: str
    ip: str | None = Field(description="the guest's address while QEMU runs")
    ports: dict[str, int] = Field(
        description='host ports forwarded now, e.g. {"ssh": 22022}; {} when none, and while the VM is '
        "stopped or in error (it keeps its SSH port for its next start) or its image serves no SSH"
    )
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None


class VMList(Public):
    vms: list[VMPublic]
    pagination: Pagination


class DeletedVM(Public):
    id: str


class VMLiveStatus(Public):
    id: str
    status: VMStatus
    status_reason: str | None
    pid: int | None
    qemu_status: str | None
    uptime: float = Field(description="seconds since the start; 0 when not running")


class MemoryUsage(Public):
    used_mb: float
    total_mb: int


class DiskIO(Public):
    read_bytes: int
    write_bytes: int
    allocated_bytes: int | None = Field(
        description="bytes the VM's disk file really takes on the host (thin: grows as the guest "
        "writes; its base image not counted); null when the disk is missing"
    )


class NetworkIO(Public):
    rx_bytes: int | None
    tx_bytes: int | None


class VMMetrics(Public):
    vm_id: str
    status: VMStatus
    cpu_percent: float
    memory: MemoryUsage
    disk: DiskIO
    network: NetworkIO
    uptime: float = Field(description="seconds")
    timestamp: Timestamp


class ConsoleLog(Public):
    log: str
    size: int = Field(
        description="bytes saved: console.log and the rotated console.log.1, each at most "
        "`console_log_max_bytes`"
    )
    truncated: bool = Field(description="true when `log` is only its tail")


class ConsoleTicket(Public):
    ticket: str
    url: str = Field(description="the WebSocket URL to open, ticket included")
    expires_in: int = Field(description="seconds")
    type: Literal["serial", "vnc"]


# -- images --------------------------------------------------------------------------------------
class ImagePublic(Public):
    id: str = Field(examples=["img-1a2b3c4d"])
    name: str
    aliases: list[str]
    format: ImageFormat
    status: ImageStatus
    status_reason: str | None
    size_bytes: int
    virtual_size_bytes: int
    is_default: bool
    serves_ssh: bool = Field(
        description="whether its guest runs an SSH server; only then do its VMs get an SSH port "
        "(false for the built-in tiny guest)"
    )
    source: str
    created_at: Timestamp


class ImageList(Public):
    images: list[ImagePublic]


# -- operations ----------------------------------------------------------------------------------
class OperationError(Public):
    code: str = Field(examples=["INTERRUPTED"])
    message: str


class OperationPublic(Public):
    id: str = Field(examples=["op-1a2b3c4d5e6f"])
    type: str = Field(examples=["vm.start", "image.pull", "image.import"])
    status: OperationStatus
    progress: int | None = Field(description="0-100, or null when the work cannot tell")
    message: str
    resource_type: str = Field(examples=["vm", "image"])
    resource_id: str
    owner: str | None = Field(description="the id of the user whose operation it is")
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None
    error: OperationError | None = Field(description="when failed")
    result: dict[str, Any] | None = Field(description="when succeeded, e.g. {vm_id, status}")
    cancellable: bool


class OperationList(Public):
    operations: list[OperationPublic]
    pagination: Pagination


class AcceptedEnvelope(Envelope[T], Generic[T]):
    """A 202 answer: `data` as the finished call would hold it, and the operation doing the work
    (its URL is in the `Location` header)."""

    operation: OperationPublic


# -- system --------------------------------------------------------------------------------------
class AuditEntryPublic(Public):
    id: int
    timestamp: Timestamp
    level: str
    user_id: str | None
    username: str | None
    client_ip: str | None
    action: str
    target_type: str | None
    target_id: str | None
    result: str
    message: str
    request_id: str | None


class AuditLogList(Public):
    logs: list[AuditEntryPublic]
    pagination: Pagination


class HealthStatus(Public):
    status: Literal["ok"]


class ReadyStatus(Public):
    status: Literal["ready"]
    checks: dict[str, str]


class VersionInfo(Public):
    version: str
    api_version: str = Field(examples=["v1"])


class HostInfo(Public):
    hostname: str
    os: str
    kernel: str
    arch: str


class CpuInfo(Public):
    count: int | None
    percent: float


class MemoryInfo(Public):
    total_mb: int
    used_mb: int


class DiskInfo(Public):
    total_gb: float
    used_gb: float


class HypervisorInfo(Public):
    qemu_version: str
    accelerator: str
    architectures: list[str]


class SystemInfo(Public):
    version: str
    api_version: str
    uptime: float = Field(description="seconds since the server started")
    host: HostInfo
    cpu: CpuInfo
    memory: MemoryInfo
    disk: DiskInfo
    hypervisor: HypervisorInfo
    database: Literal["sqlite", "postgresql"]
    default_admin_password: bool | None = Field(
        description="whether 'admin' still has the password admin123; null for users who are not admins"
    )


class VMCounts(Public):
    total: int
    by_status: dict[str, int]


class ResourceSample(Public):
    timestamp: float = Field(description="Unix time")
    host_cpu_percent: float
    host_memory_used_mb: float
    vms_running: int


class SystemStats(Public):
    period: Literal["1h", "24h", "7d", "30d"]
    vms: VMCounts
    resources: list[ResourceSample]
    sample_interval_seconds: float
    events: dict[str, int] = Field(description="audit events per action in the period")
