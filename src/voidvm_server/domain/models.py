"""Plain domain records, shared by services, repositories and the API layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

GUEST_IP = "10.0.2.15"  # passt (and QEMU's restricted fallback) always lease this address


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class UserStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class VMStatus(StrEnum):
    CREATING = "creating"
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    PAUSED = "paused"
    REBOOTING = "rebooting"
    DELETING = "deleting"
    ERROR = "error"


# While a VM is in one of these, its QEMU forwards its ports (or is about to, or still does).
FORWARDING = frozenset(
    {VMStatus.STARTING, VMStatus.RUNNING, VMStatus.PAUSED, VMStatus.REBOOTING, VMStatus.STOPPING}
)


class ImageFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"
    ISO = "iso"
    KERNEL = "kernel"


class ImageStatus(StrEnum):
    AVAILABLE = "available"
    DOWNLOADING = "downloading"
    ERROR = "error"


@dataclass
class Quota:
    max_vms: int
    max_cpus: int
    max_memory_mb: int
    max_disk_gb: int


@dataclass
class Usage:
    vms: int = 0
    cpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0


@dataclass
class User:
    id: str
    username: str
    email: str | None
    password_hash: str
    role: Role
    status: UserStatus
    quota: Quota
    usage: Usage
    token_version: int
    failed_logins: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass
class Image:
    id: str
    name: str
    aliases: list[str]
    format: ImageFormat
    status: ImageStatus
    status_reason: str | None
    size_bytes: int
    virtual_size_bytes: int
    is_default: bool
    source: str
    created_at: datetime
    # File names inside the image's own directory; never user supplied.
    files: dict[str, str] = field(default_factory=dict)
    kernel_cmdline: str | None = None
    # Whether its guest runs an SSH server: only then is a VM's SSH port forwarded and shown.
    serves_ssh: bool = True


@dataclass
class VM:
    id: str
    name: str
    description: str
    status: VMStatus
    status_reason: str | None
    cpu: int
    memory_mb: int
    disk_gb: int
    os: str
    image_id: str
    owner_id: str
    owner_name: str
    ssh_port: int | None
    pid: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None

    @property
    def ports(self) -> dict[str, int]:
        """The host ports forwarded now. A VM at rest keeps its SSH port in `ssh_port` (taken
        again at its next start when free) but forwards nothing, so shows none."""
        return {"ssh": self.ssh_port} if self.ssh_port and self.status in FORWARDING else {}


@dataclass
class ApiToken:
    id: str
    user_id: str
    name: str
    prefix: str
    token_hash: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass
class AuditEntry:
    id: int
    timestamp: datetime
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
