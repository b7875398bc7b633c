"""Result objects: plain dicts that also allow attribute access.

Every object the API returns is a :class:`Record`, a ``dict`` subclass, so both
``vm["id"]`` (as in the user's documentation) and ``vm.id`` work, nested objects
included (``vm.ports.ssh``). ``json.dumps`` accepts records as they are.

The typed subclasses (:class:`VM`, :class:`Image`, ...) only add annotations for type
checkers and editors; at run time they are the same dict. Keys that collide with dict
methods (``items``, ``keys``, ``values``, ``get``, ...) are reachable by subscription only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

__all__ = [
    "VM",
    "ApiToken",
    "ConsoleLog",
    "CreatedApiToken",
    "Image",
    "LoginResult",
    "Page",
    "Record",
    "User",
    "VMMetrics",
    "VMStatus",
]


def _wrap(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, Record):
        return Record(value)
    if isinstance(value, list):
        return [_wrap(item) for item in value]
    return value


class Record(dict[str, Any]):
    """A JSON object with attribute access, converted recursively."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            dict.__setitem__(self, key, _wrap(value))

    @classmethod
    def from_json(cls, data: Any) -> Self:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return cls(data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!s} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, _wrap(value))

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *(k for k in self if k.isidentifier())]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


class VM(Record):
    """A virtual machine (``GET /vms/{id}``)."""

    id: str
    name: str
    description: str | None
    status: str
    cpu: int
    memory: int
    disk: int
    os: str | None
    image: str | None
    owner: str
    owner_id: str
    ip: str | None
    ports: Record
    status_reason: str | None
    created_at: str
    updated_at: str
    started_at: str | None


class VMStatus(Record):
    """Live status from the hypervisor (``GET /vms/{id}/status``)."""

    id: str
    status: str
    status_reason: str | None
    pid: int | None
    qemu_status: str | None
    uptime: float


class VMMetrics(Record):
    """Resource usage (``GET /vms/{id}/metrics``). ``disk`` holds ``read_bytes``, ``write_bytes``
    and ``allocated_bytes`` (what the VM's disk file takes on the host)."""

    vm_id: str
    status: str
    cpu_percent: float
    memory: Record
    disk: Record
    network: Record
    uptime: float
    timestamp: str


class ConsoleLog(Record):
    """The saved serial output (``GET /vms/{id}/console/log``)."""

    log: str
    size: int
    truncated: bool


class Image(Record):
    """A disk, ISO or kernel image."""

    id: str
    name: str
    aliases: list[str]
    format: str
    status: str
    size_bytes: int | None
    virtual_size_bytes: int | None
    is_default: bool
    serves_ssh: bool  # only then do its VMs get ports.ssh
    source: str | None
    status_reason: str | None
    created_at: str


class User(Record):
    """A user account."""

    id: str
    username: str
    email: str | None
    role: str
    status: str
    quota: Record
    usage: Record
    created_at: str
    updated_at: str
    last_login_at: str | None


class ApiToken(Record):
    """A personal API token (its secret is never returned again after creation)."""

    id: str
    name: str
    prefix: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None


class CreatedApiToken(ApiToken):
    """A freshly created API token; ``token`` holds the secret, shown once."""

    token: str


class LoginResult(Record):
    """The answer to ``POST /auth/login`` and ``POST /auth/refresh``."""

    token: str
    token_type: str
    expires_in: int
    refresh_token: str | None
    user: Record


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a paginated listing."""

    items: list[T]
    page: int
    limit: int
    total: int
    pages: int

    @property
    def has_next(self) -> bool:
        return self.page < self.pages
