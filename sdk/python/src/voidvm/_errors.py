"""The SDK's one error tree.

::

    VoidVMError                  .code .message .details .status .request_id
     ├── ValidationError         400 VALIDATION_ERROR, BAD_REQUEST; 413 PAYLOAD_TOO_LARGE
     ├── AuthenticationError     401 UNAUTHORIZED, INVALID_TOKEN, TOKEN_EXPIRED, ...
     ├── PermissionDeniedError   403 FORBIDDEN, ACCOUNT_DISABLED
     │    └── QuotaExceededError 403 QUOTA_EXCEEDED
     ├── NotFoundError           404 VM_NOT_FOUND, IMAGE_NOT_FOUND, OPERATION_NOT_FOUND, ...
     ├── ConflictError           409 VM_ALREADY_RUNNING, INVALID_STATE, NOT_CANCELLABLE, ...
     ├── RateLimitError          429 RATE_LIMIT_EXCEEDED, TOO_MANY_ATTEMPTS, ... (.retry_after)
     ├── ServerError             5xx INTERNAL_SERVER_ERROR, HYPERVISOR_UNAVAILABLE, ...
     ├── TransportError          no answer: connection refused, timeout, broken socket
     │    └── SocketClosedError  the WebSocket closed or would not open (.close_code)
     ├── ConsoleStateError       console used before open or after close
     └── WaitTimeoutError        the SDK gave up waiting (also a builtin ``TimeoutError``)

An error the server answered with keeps the server's ``code`` (``VM_NOT_FOUND``), human
``message``, ``details`` (a string or, for validation errors, a list of ``{field, reason}``),
the HTTP ``status`` and the ``X-Request-ID`` of the response. The underlying library
exception, when there is one, is chained as ``__cause__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "ConsoleStateError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "SocketClosedError",
    "TransportError",
    "ValidationError",
    "VoidVMError",
    "WaitTimeoutError",
    "error_class_for",
]


class VoidVMError(Exception):
    """Base class of every error the SDK raises."""

    default_code = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.status is not None:
            text = f"[{self.status}] {text}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"status={self.status!r}, request_id={self.request_id!r})"
        )


class ValidationError(VoidVMError):
    """The request was rejected as malformed or out of bounds (400, 413)."""

    default_code = "VALIDATION_ERROR"


class AuthenticationError(VoidVMError):
    """No token, a bad or expired token, or wrong credentials (401)."""

    default_code = "UNAUTHORIZED"


class PermissionDeniedError(VoidVMError):
    """The caller is authenticated but not allowed to do this (403)."""

    default_code = "FORBIDDEN"


class QuotaExceededError(PermissionDeniedError):
    """The caller's quota (VMs, vCPUs, memory, disk) would be exceeded (403 QUOTA_EXCEEDED)."""

    default_code = "QUOTA_EXCEEDED"


class NotFoundError(VoidVMError):
    """The VM, image, user or token does not exist, or is not visible to the caller (404)."""

    default_code = "NOT_FOUND"


class ConflictError(VoidVMError):
    """The resource is in the wrong state or the name is taken (409)."""

    default_code = "CONFLICT"


class RateLimitError(VoidVMError):
    """Too many requests (429); ``retry_after`` is the server's hint in seconds, if any."""

    default_code = "RATE_LIMIT_EXCEEDED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        details: Any = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details, status=status, request_id=request_id)
        self.retry_after = retry_after


class ServerError(VoidVMError):
    """The server or the hypervisor failed (5xx)."""

    default_code = "INTERNAL_SERVER_ERROR"


class TransportError(VoidVMError):
    """The server could not be reached or the connection broke before an answer."""

    default_code = "CONNECTION_ERROR"


class SocketClosedError(TransportError):
    """The WebSocket closed or could not be opened; reconnecting may help."""

    default_code = "CONNECTION_CLOSED"

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class ConsoleStateError(VoidVMError):
    """The console is not attached (not opened yet, or already closed)."""

    default_code = "CONSOLE_NOT_ATTACHED"


class WaitTimeoutError(VoidVMError, TimeoutError):
    """A client-side wait (``vms.wait_for``, ``operations.wait``, ``console.wait_for_output``)
    ran out of time."""

    default_code = "WAIT_TIMEOUT"


_BY_CODE: dict[str, type[VoidVMError]] = {
    "VALIDATION_ERROR": ValidationError,
    "BAD_REQUEST": ValidationError,
    "INVALID_HOST": ValidationError,
    "PAYLOAD_TOO_LARGE": ValidationError,
    "UNAUTHORIZED": AuthenticationError,
    "INVALID_TOKEN": AuthenticationError,
    "TOKEN_EXPIRED": AuthenticationError,
    "INVALID_CREDENTIALS": AuthenticationError,
    "ACCOUNT_LOCKED": AuthenticationError,
    "FORBIDDEN": PermissionDeniedError,
    "ACCOUNT_DISABLED": PermissionDeniedError,
    "QUOTA_EXCEEDED": QuotaExceededError,
    "NOT_FOUND": NotFoundError,
    "VM_NOT_FOUND": NotFoundError,
    "USER_NOT_FOUND": NotFoundError,
    "IMAGE_NOT_FOUND": NotFoundError,
    "TOKEN_NOT_FOUND": NotFoundError,
    "OPERATION_NOT_FOUND": NotFoundError,
    "CONFLICT": ConflictError,
    "OPERATION_CANCELLED": ConflictError,
    "VM_ALREADY_RUNNING": ConflictError,
    "VM_NOT_RUNNING": ConflictError,
    "INVALID_STATE": ConflictError,
    "OPERATION_IN_PROGRESS": ConflictError,
    "NAME_CONFLICT": ConflictError,
    "IMAGE_IN_USE": ConflictError,
    "IMAGE_NOT_AVAILABLE": ConflictError,
    "NOT_CANCELLABLE": ConflictError,
    "RATE_LIMIT_EXCEEDED": RateLimitError,
    "TOO_MANY_ATTEMPTS": RateLimitError,
    "LOGIN_BUSY": RateLimitError,
    "INTERNAL_SERVER_ERROR": ServerError,
    "HYPERVISOR_UNAVAILABLE": ServerError,
    "SERVICE_UNAVAILABLE": ServerError,
    "HYPERVISOR_TIMEOUT": ServerError,
    "HYPERVISOR_ERROR": ServerError,
    "STORAGE_FULL": ServerError,
    "STORAGE_READ_ONLY": ServerError,
    "INSUFFICIENT_STORAGE": ServerError,
    "IMAGE_PULL_FAILED": ServerError,
    "INTERRUPTED": ServerError,  # the server stopped while the operation ran
}

_BY_STATUS: dict[int, type[VoidVMError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    429: RateLimitError,
}


def error_class_for(status: int | None, code: str | None) -> type[VoidVMError]:
    """Pick the exception class for an error answer.

    The HTTP status decides the family; within 403 the code picks ``QuotaExceededError``.
    Without a status (WebSocket ``error`` messages) the code alone decides.
    """
    by_code = _BY_CODE.get(code or "")
    if status is None:
        return by_code or VoidVMError
    by_status = _BY_STATUS.get(status)
    if by_status is None:
        return ServerError if status >= 500 else VoidVMError
    if by_code is not None and issubclass(by_code, by_status):
        return by_code
    return by_status
