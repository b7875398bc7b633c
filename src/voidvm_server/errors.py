"""The one error tree. Meaning only: `api/errors.py` maps each class to an HTTP status.

VoidVMError
 ├── ValidationError            bad input (field, reason) pairs
 ├── AuthError                  INVALID_CREDENTIALS, INVALID_TOKEN, TOKEN_EXPIRED, ...
 ├── ForbiddenError             FORBIDDEN, ACCOUNT_DISABLED
 │    └── QuotaExceededError
 ├── NotFoundError              VM_NOT_FOUND, USER_NOT_FOUND, IMAGE_NOT_FOUND, ...
 ├── ConflictError              NAME_CONFLICT, IMAGE_IN_USE, ...
 │    └── InvalidStateError     VM_ALREADY_RUNNING, VM_NOT_RUNNING, INVALID_STATE, ...
 │         ├── IllegalTransitionError  a state change the transition table forbids (a bug if seen)
 │         └── ConcurrentChangeError   the state changed under a compare-and-set
 ├── TooManyRequestsError       RATE_LIMIT_EXCEEDED, TOO_MANY_ATTEMPTS
 ├── StorageError               STORAGE_FULL, STORAGE_READ_ONLY (the host's VM storage)
 │    └── InsufficientStorageError  INSUFFICIENT_STORAGE (free space under the reserve)
 ├── ServiceUnavailableError    SERVICE_UNAVAILABLE (the database cannot be reached)
 └── DriverError                the hypervisor failed
      ├── HypervisorUnavailableError
      └── HypervisorTimeoutError
"""

from __future__ import annotations

from typing import Any


class VoidVMError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class ValidationError(VoidVMError):
    code = "VALIDATION_ERROR"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Invalid value for '{field}': {reason}", details=[_issue(field, reason)])

    @classmethod
    def many(cls, issues: list[tuple[str, str]]) -> ValidationError:
        err = cls(issues[0][0], issues[0][1])
        err.message = "Request parameters are invalid"
        err.details = [_issue(f, r) for f, r in issues]
        return err


def _issue(field: str, reason: str) -> dict[str, str]:
    return {"field": field, "reason": reason}


class AuthError(VoidVMError):
    code = "UNAUTHORIZED"


class AccountDisabledError(AuthError):
    """A valid credential of a disabled account: 403 over HTTP, and it closes WebSockets."""

    code = "ACCOUNT_DISABLED"

    def __init__(self, message: str = "The account is disabled") -> None:
        super().__init__(message)


class ForbiddenError(VoidVMError):
    code = "FORBIDDEN"


class QuotaExceededError(ForbiddenError):
    code = "QUOTA_EXCEEDED"


class NotFoundError(VoidVMError):
    code = "NOT_FOUND"


class ConflictError(VoidVMError):
    code = "CONFLICT"


class InvalidStateError(ConflictError):
    code = "INVALID_STATE"

    def __init__(self, message: str, *, code: str | None = None, current: str) -> None:
        super().__init__(message, code=code, details={"current_status": current})
        self.current = current


class IllegalTransitionError(InvalidStateError):
    """A move the VM state machine (`domain/states.py`) does not allow."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"A VM cannot go from {current} to {target}", current=current)
        self.target = target


class ConcurrentChangeError(InvalidStateError):
    """Another writer changed the VM's state between our read and our write: nothing was written."""

    code = "OPERATION_IN_PROGRESS"

    def __init__(self, current: str) -> None:
        super().__init__(f"The VM changed meanwhile (it is {current}); try again", current=current)


class TooManyRequestsError(VoidVMError):
    code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code, details={"retry_after": retry_after})
        self.retry_after = retry_after


class StorageError(VoidVMError):
    """The host cannot store a VM's files: its disk is full or not writable. Never names a path."""

    code = "STORAGE_FULL"


class InsufficientStorageError(StorageError):
    """Refused before anything was written: the host's free space is under VoidVM's reserve."""

    code = "INSUFFICIENT_STORAGE"


class ServiceUnavailableError(VoidVMError):
    code = "SERVICE_UNAVAILABLE"


class DriverError(VoidVMError):
    code = "HYPERVISOR_ERROR"


class HypervisorUnavailableError(DriverError):
    code = "HYPERVISOR_UNAVAILABLE"


class HypervisorTimeoutError(DriverError):
    code = "HYPERVISOR_TIMEOUT"


def vm_not_found(vm_id: str) -> NotFoundError:
    return NotFoundError(
        "Virtual machine not found",
        code="VM_NOT_FOUND",
        details=f"Virtual machine with ID '{vm_id}' was not found",
    )
