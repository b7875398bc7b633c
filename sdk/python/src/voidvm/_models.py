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

from ._errors import error_class_for

__all__ = [
    "OPERATION_FINISHED",
    "VM",
    "ApiToken",
    "ConsoleLog",
    "CreatedApiToken",
    "Image",
    "LoginResult",
    "Operation",
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
    """A virtual machine (``GET /vms/{id}``). An action called with ``wait=False`` returns the
    VM with one more key, ``operation``: the :class:`Operation` finishing the action."""

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
    """A disk, ISO or kernel image. A URL import with ``wait=False`` returns it ``downloading``
    with one more key, ``operation``: the :class:`Operation` doing the download."""

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


#: The statuses an operation ends in; it never changes again after reaching one.
OPERATION_FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class Operation(Record):
    """Long work the server records (``GET /operations/{id}``): a VM action sent with
    ``wait=False``, an image import from a URL or a catalog pull.

    ``status`` is ``pending``, ``running``, ``succeeded``, ``failed`` or ``cancelled``;
    ``progress`` is 0-100 or None when the work cannot tell. A failed operation has
    ``error`` ``{code, message}``, a succeeded one its ``result`` (a VM action's is
    ``{vm_id, status}``, an image import's ``{image_id}``).
    """

    id: str
    type: str
    status: str
    progress: int | None
    message: str
    resource_type: str
    resource_id: str
    owner: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    error: Record | None
    result: Record | None
    cancellable: bool

    @property
    def finished(self) -> bool:
        """True once it has succeeded, failed or been cancelled."""
        return self.get("status") in OPERATION_FINISHED

    @property
    def succeeded(self) -> bool:
        return self.get("status") == "succeeded"

    def raise_for_failure(self) -> Self:
        """Return the operation, unless it failed or was cancelled: a failed one raises the
        :class:`~voidvm.VoidVMError` subclass its ``error.code`` maps to (``VALIDATION_ERROR``
        raises :class:`~voidvm.ValidationError`, an unknown code :class:`~voidvm.VoidVMError`),
        a cancelled one :class:`~voidvm.ConflictError` with code ``OPERATION_CANCELLED``. The
        error's ``details`` are ``{"operation": <its id>}``. One still running is returned."""
        status = self.get("status")
        details = {"operation": self.get("id")}
        if status == "cancelled":
            raise error_class_for(None, "OPERATION_CANCELLED")(
                f"the {self.get('type')} operation was cancelled",
                code="OPERATION_CANCELLED",
                details=details,
            )
        if status == "failed":
            error = self.get("error") or {}
            code = str(error.get("code") or "OPERATION_FAILED")
            message = str(error.get("message") or self.get("message") or "the operation failed")
            raise error_class_for(None, code)(message, code=code, details=details)
        return self


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
