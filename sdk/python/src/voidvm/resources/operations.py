"""``/operations``: long work (``wait=False`` VM actions, image imports and pulls) to read, wait
on and cancel. Request building and the waiting clock are shared; the classes only send."""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import WaitTimeoutError
from .._http import Call
from .._models import Operation, Page, Record
from ._base import AsyncResource, SyncResource, path
from ._paging import PAGE_SIZE, has_more, page_parser

__all__ = ["AsyncOperations", "OperationRef", "Operations", "operation_id", "with_operation"]

#: An operation, or its id.
OperationRef = Operation | str
#: Told every state of the operation a wait sees.
ProgressCallback = Callable[[Operation], None]

#: Seconds one long poll waits at the server (which allows at most 60).
_LONG_POLL = 30.0
#: With ``on_progress``, polls are this short, so that the progress shown keeps moving.
_PROGRESS_POLL = 2.0
#: Extra seconds the HTTP timeout allows beyond the server-side wait.
_GRACE = 30.0

R = TypeVar("R", bound=Record)


def operation_id(operation: OperationRef) -> str:
    if isinstance(operation, str):
        return operation
    if isinstance(operation, Mapping) and isinstance(operation.get("id"), str):
        return str(operation["id"])
    raise TypeError(f"expected an Operation or an operation id, got {type(operation).__name__}")


def with_operation(parse: Callable[[Any], R]) -> Callable[[Any], R]:
    """Parse a whole envelope (``Call(envelope=True)``): its ``data`` with ``parse``, and the
    ``operation`` of a 202 answer added to the result as its ``operation`` key."""

    def parse_envelope(envelope: Any) -> R:
        body = envelope if isinstance(envelope, dict) else {}
        result = parse(body.get("data"))
        operation = body.get("operation")
        if isinstance(operation, dict):
            result["operation"] = Operation.from_json(operation)
        return result

    return parse_envelope


def _list_call(
    page: int, limit: int, status: str | None, type: str | None, resource_id: str | None
) -> Call[Page[Operation]]:
    params = {
        "page": page,
        "limit": limit,
        "status": status,
        "type": type,
        "resource_id": resource_id,
    }
    return Call("GET", "/operations", page_parser("operations", Operation.from_json), params=params)


def _get_call(operation: OperationRef) -> Call[Operation]:
    return Call("GET", path("operations", operation_id(operation)), Operation.from_json)


def _wait_call(operation: str, seconds: float) -> Call[Operation]:
    return Call(
        "GET",
        path("operations", operation, "wait"),
        Operation.from_json,
        params={"timeout": round(seconds, 3)},
        timeout=seconds + _GRACE,
    )


def _cancel_call(operation: OperationRef) -> Call[Operation]:
    return Call("DELETE", path("operations", operation_id(operation)), Operation.from_json)


@dataclass
class _Wait:
    """The clock of one wait: how long the next long poll may be, and when to give up."""

    operation_id: str
    timeout: float | None
    deadline: float | None
    poll: float
    on_progress: ProgressCallback | None

    @classmethod
    def start(
        cls, operation: OperationRef, timeout: float | None, on_progress: ProgressCallback | None
    ) -> _Wait:
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be 0 or more seconds (None: no limit)")
        return cls(
            operation_id=operation_id(operation),
            timeout=timeout,
            deadline=None if timeout is None else time.monotonic() + timeout,
            poll=_LONG_POLL if on_progress is None else _PROGRESS_POLL,
            on_progress=on_progress,
        )

    def given(self, operation: OperationRef) -> Operation | None:
        """The operation as the caller handed it over, if that is already its end."""
        if not isinstance(operation, Operation):
            return None
        if self.on_progress is not None:
            self.on_progress(operation)
        return operation if operation.finished else None

    def next_poll(self) -> float:
        if self.deadline is None:
            return self.poll
        return max(0.0, min(self.poll, self.deadline - time.monotonic()))

    def reached(self, operation: Operation) -> bool:
        """True once ``operation`` has finished; raises once the deadline has passed."""
        if self.on_progress is not None:
            self.on_progress(operation)
        if operation.finished:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise WaitTimeoutError(
                f"the {operation.get('type')} operation is still {operation.get('status')} "
                f"after {self.timeout:g} s",
                details={"operation": self.operation_id},
            )
        return False


class Operations(SyncResource):
    """Operations (blocking): the caller's own; an admin's list holds everyone's."""

    def list(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        resource_id: str | None = None,
    ) -> builtins.list[Operation]:
        """Every matching operation, newest first, fetching as many pages as needed."""
        return [*self.iter(status=status, type=type, resource_id=resource_id)]

    def iter(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        resource_id: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[Operation]:
        """Yield operations lazily, newest first, one page request at a time."""
        page = 1
        while True:
            result = self.list_page(
                page, page_size, status=status, type=type, resource_id=resource_id
            )
            yield from result.items
            if not has_more(result):
                return
            page += 1

    def list_page(
        self,
        page: int = 1,
        limit: int = 20,
        *,
        status: str | None = None,
        type: str | None = None,
        resource_id: str | None = None,
    ) -> Page[Operation]:
        """One page of operations (``type`` such as ``vm.start``, ``image.pull``)."""
        return self._http.send(_list_call(page, limit, status, type, resource_id))

    def get(self, operation: OperationRef) -> Operation:
        return self._http.send(_get_call(operation))

    def wait(
        self,
        operation: OperationRef,
        timeout: float | None = None,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Operation:
        """Long-poll until the operation has finished and return it, also when it failed or
        was cancelled (``.raise_for_failure()`` raises its error). ``timeout`` is the overall
        limit in seconds (None: none); past it :class:`WaitTimeoutError` is raised.
        ``on_progress`` is told every state seen (polls are then 2 s apart at most)."""
        waiting = _Wait.start(operation, timeout, on_progress)
        done = waiting.given(operation)
        while done is None:
            current = self._http.send(_wait_call(waiting.operation_id, waiting.next_poll()))
            done = current if waiting.reached(current) else None
        return done

    def cancel(self, operation: OperationRef) -> Operation:
        """Cancel a running image import or pull; returns it ``cancelled``. Raises
        :class:`ConflictError` (``NOT_CANCELLABLE``) for a finished one or a VM action."""
        return self._http.send(_cancel_call(operation))


class AsyncOperations(AsyncResource):
    """Operations (asyncio); the same methods as :class:`Operations`, awaitable."""

    async def list(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        resource_id: str | None = None,
    ) -> builtins.list[Operation]:
        return [op async for op in self.iter(status=status, type=type, resource_id=resource_id)]

    async def iter(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        resource_id: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[Operation]:
        page = 1
        while True:
            result = await self.list_page(
                page, page_size, status=status, type=type, resource_id=resource_id
            )
            for operation in result.items:
                yield operation
            if not has_more(result):
                return
            page += 1

    async def list_page(
        self,
        page: int = 1,
        limit: int = 20,
        *,
        status: str | None = None,
        type: str | None = None,
        resource_id: str | None = None,
    ) -> Page[Operation]:
        return await self._http.send(_list_call(page, limit, status, type, resource_id))

    async def get(self, operation: OperationRef) -> Operation:
        return await self._http.send(_get_call(operation))

    async def wait(
        self,
        operation: OperationRef,
        timeout: float | None = None,  # noqa: ASYNC109 (an overall limit over many long polls)
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Operation:
        waiting = _Wait.start(operation, timeout, on_progress)
        done = waiting.given(operation)
        while done is None:
            current = await self._http.send(_wait_call(waiting.operation_id, waiting.next_poll()))
            done = current if waiting.reached(current) else None
        return done

    async def cancel(self, operation: OperationRef) -> Operation:
        return await self._http.send(_cancel_call(operation))
