"""Exit codes of the ``voidvm`` command, one per error family."""

from __future__ import annotations

import enum

from .._errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
    VoidVMError,
    WaitTimeoutError,
)

__all__ = ["ExitCode", "exit_code_for"]


class ExitCode(enum.IntEnum):
    OK = 0
    ERROR = 1  # anything not listed below
    USAGE = 2  # bad flags or arguments, or the server rejected the input (400)
    AUTH = 3  # not logged in, bad or expired token, wrong password (401)
    NOT_FOUND = 4  # no such VM, image, user (404)
    CONFLICT = 5  # wrong state or name taken (409)
    FORBIDDEN = 6  # not allowed or over quota (403)
    RATE_LIMITED = 7  # too many requests (429)
    SERVER = 8  # the server or hypervisor failed (5xx)
    CONNECTION = 9  # the server could not be reached
    TIMEOUT = 10  # gave up waiting for a VM state or console output
    INTERRUPTED = 130  # Ctrl-C


_TABLE: list[tuple[type[VoidVMError], ExitCode]] = [
    (ValidationError, ExitCode.USAGE),
    (AuthenticationError, ExitCode.AUTH),
    (NotFoundError, ExitCode.NOT_FOUND),
    (ConflictError, ExitCode.CONFLICT),
    (PermissionDeniedError, ExitCode.FORBIDDEN),
    (RateLimitError, ExitCode.RATE_LIMITED),
    (ServerError, ExitCode.SERVER),
    (TransportError, ExitCode.CONNECTION),
    (WaitTimeoutError, ExitCode.TIMEOUT),
]


def exit_code_for(error: VoidVMError) -> ExitCode:
    for cls, code in _TABLE:
        if isinstance(error, cls):
            return code
    return ExitCode.ERROR
