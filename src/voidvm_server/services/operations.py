"""OperationService: long work as a row a client can read, wait on, list and cancel.

- An operation is written `running` before its work begins, and finished exactly once:
  `succeeded` with a result, `failed` with {code, message}, or `cancelled`.
- Every change is published as an `operation` event (the `operations` WebSocket topic).
- A wait reads the row again on every change it hears of, and at least once a second, so it ends
  even when the change happened in another process.
- An operation records the API worker that runs it. One whose worker is gone (killed, or the
  whole server stopped) is failed by any other worker within seconds, and at the next start
  (`recover`). A cancel reaches the work in whichever worker runs it (a `operation-cancel`
  event, an internal kind no WebSocket topic shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.auth.principal import Principal
from voidvm_server.domain.operations import INTERRUPTED, Operation, OperationStatus
from voidvm_server.errors import ConflictError, NotFoundError, ValidationError, VoidVMError
from voidvm_server.events.bus import Event
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.operations import OperationRepository
from voidvm_server.services.clock import iso, now
from voidvm_server.services.event_log import EventLog
from voidvm_server.services.ids import is_valid_id, new_id
from voidvm_server.services.tasks import BackgroundTasks, every
from voidvm_server.services.workers import WorkerPresence

log = logging.getLogger(__name__)
MAX_WAIT_SECONDS = 60.0
REREAD_SECONDS = 1.0  # a wait re-reads the row at least this often
PRUNE_EVERY_SECONDS = 3600.0
ORPHANS_EVERY_SECONDS = 5.0  # how often a worker looks for operations of workers that are gone
CANCEL_EVENT = "operation-cancel"  # asks the worker that runs an operation to cancel it
PROGRESS_EVERY_SECONDS = 0.5  # progress is written at most this often (and on every whole percent)
S = OperationStatus

# The work of an operation: given its progress reporter, returns the result to record.
Work = Callable[["Progress"], Awaitable[dict[str, Any] | None]]


def operation_json(op: Operation) -> dict[str, Any]:
    """The operation as the API shows it (REST answers and `operation` events alike)."""
    return {
        "id": op.id,
        "type": op.type,
        "status": op.status.value,
        "progress": op.progress,
        "message": op.message,
        "resource_type": op.resource_type,
        "resource_id": op.resource_id,
        "owner": op.owner_id,
        "created_at": iso(op.created_at),
        "updated_at": iso(op.updated_at),
        "finished_at": iso(op.finished_at),
        "error": op.error,
        "result": op.result,
        "cancellable": op.cancellable and not op.finished,
    }


def operation_not_found(operation_id: str) -> NotFoundError:
    return NotFoundError(
        "Operation not found",
        code="OPERATION_NOT_FOUND",
        details=f"Operation with ID '{operation_id}' was not found",
    )


@dataclass
class Progress:
    """Handed to an operation's work: `report` its progress (0-100) and what it is doing."""

    service: OperationService
    operation_id: str
    _last_percent: int | None = None
    _last_write: float = 0.0

    async def report(self, percent: int | None, message: str | None = None) -> None:
        percent = None if percent is None else max(0, min(100, int(percent)))
        moment = time.monotonic()
        if percent == self._last_percent and moment - self._last_write < PROGRESS_EVERY_SECONDS:
            return
        self._last_percent, self._last_write = percent, moment
        values: dict[str, Any] = {"progress": percent}
        if message is not None:
            values["message"] = message
        try:
            await self.service._change(self.operation_id, **values)
        except Exception:  # progress is best-effort: a busy database must not stop the work
            log.debug("Could not record the progress of %s", self.operation_id, exc_info=True)


class OperationService:
    def __init__(
        self,
        db: Database,
        events: EventLog,
        tasks: BackgroundTasks,
        *,
        retention_days: float = 30.0,
        presence: WorkerPresence | None = None,
    ) -> None:
        self.db = db
        self.presence = presence  # None: one process, which runs every operation
        self.retention = timedelta(days=retention_days)
        self.events = events
        self.tasks = tasks
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._cancel_asked: set[str] = set()
        # Cancels heard for operations not running here (yet): one begun here a moment before
        # `run` registers its task is cancelled as it starts. Bounded; the oldest go first.
        self._cancels_heard: dict[str, None] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._stop_listening = events.bus.listen(self._heard)
        self._pruner: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None

    # -- starting work -------------------------------------------------------------------------
    async def begin(
        self,
        type: str,
        *,
        resource_type: str,
        resource_id: str,
        owner_id: str,
        cancellable: bool = False,
        message: str = "",
    ) -> Operation:
        """Record an operation that is about to run (`running`)."""
        stamp = now()
        op = Operation(
            id=new_id("op"),
            type=type,
            status=S.RUNNING,
            progress=None,
            message=message,
            resource_type=resource_type,
            resource_id=resource_id,
            owner_id=owner_id,
            cancellable=cancellable,
            created_at=stamp,
            updated_at=stamp,
        )
        async with self.events.session() as s:
            await OperationRepository(s).add(op, self.presence.id if self.presence else None)
            await self._tell(s, op)
        return op

    def run(self, op: Operation, work: Work) -> asyncio.Task[Any]:
        """Run `work` in the background and record how it ends; the task, to await if wanted."""
        task = self.tasks.spawn(self._run(op, work), name=f"operation {op.id} ({op.type})")
        self._running[op.id] = task
        task.add_done_callback(lambda _: self._running.pop(op.id, None))
        if op.id in self._cancels_heard:
            del self._cancels_heard[op.id]
            self._cancel_asked.add(op.id)
            # Once it has begun (its first step is queued already), so its own handler records it.
            asyncio.get_running_loop().call_soon(task.cancel)
        return task

    async def start(self, type: str, work: Work, **fields: Any) -> tuple[Operation, asyncio.Task[Any]]:
        """`begin` and `run` in one."""
        op = await self.begin(type, **fields)
        return op, self.run(op, work)

    async def _run(self, op: Operation, work: Work) -> dict[str, Any] | None:
        try:
            result = await work(Progress(self, op.id))
        except asyncio.CancelledError:
            cancelled = op.id in self._cancel_asked
            values = (
                {"status": S.CANCELLED.value, "message": "cancelled"}
                if cancelled
                else {"status": S.FAILED.value, "message": INTERRUPTED["message"], "error": INTERRUPTED}
            )
            await asyncio.shield(self._finish(op.id, **values))
            raise
        except VoidVMError as exc:
            error = {"code": exc.code, "message": exc.message}
            await asyncio.shield(self._finish(op.id, status=S.FAILED.value, message=exc.message, error=error))
            raise
        except Exception:
            error = {"code": "INTERNAL_SERVER_ERROR", "message": "internal error"}
            await asyncio.shield(
                self._finish(op.id, status=S.FAILED.value, message=error["message"], error=error)
            )
            raise
        await asyncio.shield(self._finish(op.id, status=S.SUCCEEDED.value, progress=100, result=result))
        return result

    async def _finish(self, operation_id: str, **values: Any) -> None:
        self._cancel_asked.discard(operation_id)
        try:
            await self._change(operation_id, finished_at=now(), **values)
        except Exception:  # the database is gone: the next start marks it failed
            log.warning("Could not record the end of operation %s", operation_id, exc_info=True)

    async def _change(self, operation_id: str, **values: Any) -> Operation | None:
        async with self.events.session() as s:
            op = await OperationRepository(s).update_unfinished(operation_id, updated_at=now(), **values)
            if op is not None:
                await self._tell(s, op)
        return op

    # -- reading -------------------------------------------------------------------------------
    async def get(self, principal: Principal, operation_id: str) -> Operation:
        op = await self._load(operation_id) if is_valid_id(operation_id) else None
        if op is None or (not principal.is_admin and op.owner_id != principal.id):
            raise operation_not_found(operation_id)
        return op

    async def _load(self, operation_id: str) -> Operation | None:
        async with self.db.reading() as s:
            return await OperationRepository(s).get(operation_id)

    async def list(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        type: str | None = None,
        resource_id: str | None = None,
        page: int = 1,
        limit: int = 20,
    ) -> tuple[list[Operation], int]:
        if status is not None and status not in S.__members__.values():
            raise ValidationError("status", f"unknown status '{status}'")
        async with self.db.reading() as s:
            return await OperationRepository(s).list(
                owner_id=None if principal.is_admin else principal.id,
                status=status,
                type=type,
                resource_id=resource_id,
                offset=(page - 1) * limit,
                limit=limit,
            )

    async def wait(self, principal: Principal, operation_id: str, timeout: float) -> Operation:
        """The operation once it has finished, or as it stands after `timeout` seconds."""
        op = await self.get(principal, operation_id)
        deadline = asyncio.get_running_loop().time() + min(timeout, MAX_WAIT_SECONDS)
        while not op.finished:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            changed = self._changed.setdefault(op.id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, REREAD_SECONDS))
            op = await self._load(op.id) or op
        return op

    def _heard(self, event: Event) -> None:
        if event.kind == "operation":
            changed = self._changed.pop(event.data["id"], None)
            if changed is not None:
                changed.set()
        elif event.kind == CANCEL_EVENT:
            task = self._running.get(event.data["id"])
            if task is None:
                self._cancels_heard[event.data["id"]] = None
                while len(self._cancels_heard) > 1000:
                    del self._cancels_heard[next(iter(self._cancels_heard))]
            elif not task.done():
                self._cancel_asked.add(event.data["id"])
                task.cancel()

    # -- cancelling ----------------------------------------------------------------------------
    async def cancel(self, principal: Principal, operation_id: str) -> Operation:
        op = await self.get(principal, operation_id)
        if op.finished or not op.cancellable:
            why = f"it has {op.status.value}" if op.finished else f"a {op.type} cannot be cancelled"
            raise ConflictError(f"The operation cannot be cancelled: {why}", code="NOT_CANCELLABLE")
        task = self._running.get(op.id)
        if task is None and await self._runs_elsewhere(op.id):
            await self.events.publish(CANCEL_EVENT, {"id": op.id}, vm_id=None, owner_id=None)
            op = await self.wait(principal, op.id, MAX_WAIT_SECONDS)
        elif task is None:  # no process runs it any more: nothing to stop
            await self._finish(op.id, status=S.CANCELLED.value, message="cancelled")
        else:
            self._cancel_asked.add(op.id)
            task.cancel()
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this request itself is being cancelled, not only the operation
            except Exception:  # the work's own failure: recorded on the operation
                log.debug("Operation %s failed as it was cancelled", op.id, exc_info=True)
        ended = await self._load(op.id) or op
        if ended.status is not S.CANCELLED:  # it finished on its own just before the cancel
            raise ConflictError(
                f"The operation cannot be cancelled: it has {ended.status.value}", code="NOT_CANCELLABLE"
            )
        return ended

    # -- restarts ------------------------------------------------------------------------------
    async def _runs_elsewhere(self, operation_id: str) -> bool:
        """Whether another live worker runs the operation."""
        if self.presence is None:
            return False
        async with self.db.reading() as s:
            worker = await OperationRepository(s).worker_of(operation_id)
        return (
            worker is not None and worker != self.presence.id and worker in await self.presence.live_workers()
        )

    async def recover(self) -> None:
        """Operations whose worker is gone (an earlier server process, a killed worker) cannot
        finish: fail them. Each is changed once however many workers look at the same time."""
        async with self.db.reading() as s:  # first: an operation begun after this read is not seen
            unfinished = await OperationRepository(s).unfinished()
        alive = await self.presence.live_workers() if self.presence else set()
        orphans = [op for op, worker in unfinished if worker not in alive]
        for op in orphans:
            values = {"status": S.FAILED.value, "message": INTERRUPTED["message"], "error": INTERRUPTED}
            if await self._change(op.id, finished_at=now(), **values) is not None:
                log.warning("Operation %s (%s) was cut short: the process running it stopped", op.id, op.type)

    async def progress_of(self, resource_id: str) -> str | None:
        """`unfinished`, `finished` or None: see OperationRepository.progress_of."""
        async with self.db.reading() as s:
            return await OperationRepository(s).progress_of(resource_id)

    def start_reaping(self, then: Callable[[], Awaitable[object]]) -> None:
        """Look for the operations of workers that are gone now and then (with several
        workers), and `then` clean up after them (the image store's partial downloads)."""

        async def reap() -> None:
            await self.recover()
            await then()

        if self.presence is not None and self._reaper is None:
            reaping = every(ORPHANS_EVERY_SECONDS, reap, "Failing the operations of stopped workers")
            self._reaper = asyncio.get_running_loop().create_task(reaping, name="operation-reaper")

    def start_pruning(self) -> None:
        """Prune finished operations older than the retention now and then (hourly). A task of
        the service's own, like the monitor's: it runs for good, so it is no background work that
        `BackgroundTasks.wait_idle` would wait for."""
        pruning = every(PRUNE_EVERY_SECONDS, self.prune, "Pruning old operations")
        self._pruner = asyncio.get_running_loop().create_task(pruning, name="operations")

    async def prune(self) -> int:
        async with self.db.session() as s:
            gone = await OperationRepository(s).prune(now() - self.retention)
        if gone:
            log.info("Deleted %d operations that finished over %s ago", gone, self.retention)
        return gone

    async def _tell(self, s: AsyncSession, op: Operation) -> None:
        """The `operation` event of a change, in the change's own unit of work."""
        vm_id = op.resource_id if op.resource_type == "vm" else None
        await self.events.add(s, "operation", operation_json(op), vm_id=vm_id, owner_id=op.owner_id)

    async def close(self) -> None:
        self._stop_listening()
        for task in (self._pruner, self._reaper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reaper = None
