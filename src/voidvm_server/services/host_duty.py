"""HostDuty: what one API worker of the host does for all of them.

The host agent reports exits, pauses and its own restarts as events. Recording them (a crash
marks the VM `error` and may restart it), and matching the database with the host's processes
at start-up, must happen once per host, not once per worker. The worker that holds
`<data dir>/voidvm-duty.lock` does it; the others try for the lock every second, so when that
worker dies (the kernel drops its lock) another takes the duty over within a second and starts
with a reconcile, which records whatever happened meanwhile. The duty also looks, every few
seconds, for VMs another worker left mid-action when it died (`VMRecovery.reclaim_abandoned`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from voidvm_server.data_dir_lock import DataDirInUseError, DataDirLock
from voidvm_server.services.tasks import every
from voidvm_server.services.vm_recovery import SERVER_DOWN, WORKER_GONE
from voidvm_server.services.vms import VMService

log = logging.getLogger(__name__)
DUTY_LOCK_FILE = "voidvm-duty.lock"
RETRY_SECONDS = 1.0
RECLAIM_EVERY_SECONDS = 5.0


class HostDuty:
    def __init__(self, data_dir: Path, vms: VMService, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self.vms = vms
        self.retry_seconds = retry_seconds
        self._lock = DataDirLock(data_dir, DUTY_LOCK_FILE)
        self._waiting: asyncio.Task[None] | None = None
        self._reclaiming: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._lock.held

    async def start(self, *, meanwhile: str = SERVER_DOWN) -> None:
        """Take the duty now if it is free (then reconcile before returning: what it finds
        half-done happened `meanwhile`), else wait for it."""
        if self._try():
            await self._take_up(meanwhile=meanwhile)
        else:
            self._waiting = asyncio.create_task(self._wait_turn(), name="host-duty")

    def _try(self) -> bool:
        try:
            self._lock.acquire()
        except DataDirInUseError:
            return False
        return True

    async def _take_up(self, *, meanwhile: str) -> None:
        self.vms.start_watching()
        await self.vms.recovery.reconcile(meanwhile=meanwhile)
        reclaim = every(RECLAIM_EVERY_SECONDS, self.vms.recovery.reclaim_abandoned,
                        "Looking for VMs left mid-action by a stopped worker")  # fmt: skip
        self._reclaiming = asyncio.create_task(reclaim, name="reclaim-abandoned")
        log.info("This worker records the host's events (exits, crashes) for every worker")

    async def _wait_turn(self) -> None:
        while not self._try():  # noqa: ASYNC110 (a lock held by another process offers nothing to await)
            await asyncio.sleep(self.retry_seconds)
        try:
            await self._take_up(meanwhile=WORKER_GONE)  # the worker that had it stopped
        except Exception:  # the watch runs; a failed reconcile is retried at the next start
            log.exception("Reconciling after taking over the host's duty failed")

    async def stop(self) -> None:
        for task in (self._waiting, self._reclaiming):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._waiting = self._reclaiming = None
        self._lock.release()
