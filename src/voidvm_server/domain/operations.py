"""Operations: long work (image pulls, `wait: false` actions) recorded as a row with a status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class OperationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({OperationStatus.SUCCEEDED, OperationStatus.FAILED, OperationStatus.CANCELLED})

# Why an operation that was running when its server process ended is marked failed at the next start.
INTERRUPTED = {"code": "INTERRUPTED", "message": "the server stopped while this operation ran"}


@dataclass(frozen=True)
class Operation:
    id: str
    type: str  # "vm.start", "image.pull", ...
    status: OperationStatus
    progress: int | None  # 0-100, or None when the work cannot tell
    message: str
    resource_type: str
    resource_id: str
    owner_id: str | None  # None: the server's own work (a catalog pull nobody owns)
    cancellable: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    error: dict[str, Any] | None = None  # {code, message} when failed
    result: dict[str, Any] | None = None  # when succeeded

    @property
    def finished(self) -> bool:
        return self.status in FINISHED
