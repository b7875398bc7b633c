"""HostDuty: what one API worker of the host does for all of them.

The host agent reports exits, pauses and its own restarts as events. Recording them (a crash
marks the VM `error` and may restart it), and matching the database with the host's processes
at start-up, must happen once per host, not once per worker. The worker that holds
`<data dir>/voidvm-duty.lock` does it; the others try for the lock every second, so when that
worker dies (the kernel drops its lock) another takes the duty over within a second and starts
with a reconcile, which records whatever happened meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from voidvm_server.data_dir_lock import DataDirInUseError, DataDirLock
from voidvm_server.services.vms import VMService

log = logging.getLogger(__name__)
DUTY_LOCK_FILE = "voidvm-duty.lock"
RETRY_SECONDS = 1.0


class HostDuty:
    def __init__(self, data_dir: Path, vms: VMService, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self.vms = vms
        self.retry_seconds = retry_seconds
        self._lock = DataDirLock(data_dir, DUTY_LOCK_FILE)
        self._waiting: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._lock.held

    async def start(self) -> None:
        """Take the duty now if it is free (then reconcile before returning), else wait for it."""
        if self._try():
            await self._take_up()
        else:
            self._waiting = asyncio.create_task(self._wait_turn(), name="host-duty")

    def _try(self) -> bool:
        try:
            self._lock.acquire()
        except DataDirInUseError:
            return False
        return True

    async def _take_up(self) -> None:
        self.vms.start_watching()
        await self.vms.recovery.reconcile()
        log.info("This worker records the host's events (exits, crashes) for every worker")

    async def _wait_turn(self) -> None:
        while not self._try():  # noqa: ASYNC110 (a lock held by another process offers nothing to await)
            await asyncio.sleep(self.retry_seconds)
        try:
            await self._take_up()
        except Exception:  # the watch runs; a failed reconcile is retried at the next start
            log.exception("Reconciling after taking over the host's duty failed")

    async def stop(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        self._lock.release()
