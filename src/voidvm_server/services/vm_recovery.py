"""Bringing VM rows back in line with processes and files: after a server restart
(`reconcile`), on a live server after the database failed under a state change (`resync`), and
after an API worker died in the middle of an action (`reclaim_abandoned`).

A companion of VMService: it uses the service's state helpers and per-VM locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from voidvm_server.agent.port import DISK_FULL_REASON
from voidvm_server.domain.models import VM, ImageStatus, VMStatus
from voidvm_server.domain.states import BUSY
from voidvm_server.errors import ServiceUnavailableError, VoidVMError
from voidvm_server.persistence.engine import database_unavailable
from voidvm_server.persistence.repositories import VMRepository
from voidvm_server.services.clock import now

if TYPE_CHECKING:
    from voidvm_server.services.vms import VMService

log = logging.getLogger(__name__)
RESYNC_FIRST_DELAY, RESYNC_MAX_DELAY = 0.5, 10.0  # retrying a state the database did not take
S = VMStatus
# What happened while a VM's row was not kept up to date (in the reasons a reconcile writes).
SERVER_DOWN = "while the server was down"
DATABASE_AWAY = "while the database was unavailable"
WORKER_GONE = "when the API worker running it stopped"


class VMRecovery:
    """Owned by one VMService; works through its state helpers and per-VM locks."""

    def __init__(self, svc: VMService) -> None:
        self.svc = svc
        self._resyncing: set[str] = set()

    # -- start-up reconciliation ---------------------------------------------------------------
    async def reconcile(self, *, meanwhile: str = SERVER_DOWN) -> None:
        """Match database rows, run directories and live processes after a (re)start (or when
        a worker takes the host's duty over from one that stopped: `meanwhile`). Other workers
        may be acting meanwhile: each VM is reconciled under its lock, read again there, and
        one whose lock is held is left to the action that holds it."""
        async with self.svc.db.reading() as s:
            vms = await VMRepository(s).all()
        known = {vm.id for vm in vms}
        for listed in vms:
            lock = self.svc._lock(listed.id)
            if not await lock.try_acquire():
                continue
            try:
                vm = await self.svc.state.load(listed.id)
                if vm is None or (vm.status is S.CREATING and meanwhile == WORKER_GONE):
                    continue  # a create waiting for its image's pull holds no lock; its worker may live
                await self.reconcile_one(vm, meanwhile=meanwhile)
            except Exception as exc:  # one VM must not keep the server from starting
                message = exc.message if isinstance(exc, VoidVMError) else "internal error"
                log.warning("Reconciling VM %s failed: %s", listed.id, message, exc_info=exc)
                await self.svc.state.set(listed.id, S.ERROR, f"could not re-attach: {message}")
            finally:
                lock.release()
        for orphan in set(await self.svc.agent.known_vms()) - known:
            log.warning("Run directory %s belongs to no VM; leaving it untouched", orphan)

    async def reconcile_one(self, vm: VM, *, meanwhile: str = SERVER_DOWN) -> None:
        """Bring one row in line with its process and files. Runs at start-up, and on a live
        server for a VM whose last state change the database did not take."""
        pid = await self.svc.agent.attach(vm.id)
        if vm.status is S.DELETING:
            if pid is not None:
                await self.svc.agent.kill(vm.id)
            await self.svc._remove(vm)
            return
        if pid is not None:
            qemu = await self.svc.agent.query_status(vm.id)
            status = S.PAUSED if qemu in {"paused", "io-error"} else S.RUNNING
            reason = vm.status_reason if status is vm.status else None
            if qemu == "io-error":
                # QEMU stops a guest this way only for a write that found the host's disk full
                # (werror=enospc), maybe while the server was down.
                reason = DISK_FULL_REASON
            if (vm.status, vm.pid, vm.status_reason) != (status, pid, reason):
                await self.svc.state.set(vm.id, status, reason, pid=pid, started_at=vm.started_at or now())
            log.info("Re-attached to VM %s (pid %d)", vm.id, pid)
            return
        gone = {"pid": None, "started_at": None}  # the SSH port stays the VM's
        match vm.status:
            case S.RUNNING | S.PAUSED:
                await self.svc.state.set(vm.id, S.ERROR, f"the QEMU process ended {meanwhile}", **gone)
            case S.STARTING | S.REBOOTING:
                what = "start" if vm.status is S.STARTING else "restart"
                await self.svc.state.set(vm.id, S.ERROR, f"the VM's {what} was interrupted {meanwhile}; "
                                       "start it again", **gone)  # fmt: skip
            case S.STOPPING:
                await self.svc.state.set(vm.id, S.STOPPED, **gone)
            case S.CREATING if meanwhile != DATABASE_AWAY:
                await self._finish_interrupted_create(vm)  # its client got no answer at all
            case S.CREATING:
                # Live: the create was answered with an error (the database failed under it),
                # so it is undone, unless an image pull is still to finish it.
                image = await self.svc.images.get(vm.image_id)
                if image.status is not ImageStatus.DOWNLOADING:
                    await self.svc._forget(vm)

    # -- after an API worker died mid-action -------------------------------------------------
    async def reclaim_abandoned(self) -> None:
        """VMs an API worker left mid-action when it died (kill -9): busy (starting, stopping,
        ...) with nobody holding their lock, since every action holds it from the moment it
        writes its intent to the moment it records its outcome. Each is reconciled like a VM
        found so at start-up. Creates are left (one waiting for its image's pull holds no lock,
        and its worker may be alive): the next start of `serve` finishes an interrupted one."""
        async with self.svc.db.reading() as s:
            busy = [vm.id for vm in await VMRepository(s).all() if vm.status in BUSY]
        for vm_id in busy:
            lock = self.svc._lock(vm_id)
            if not await lock.try_acquire():
                continue  # an action runs, in this worker or another
            try:
                with self.resync_if_the_database_fails(vm_id):
                    vm = await self.svc.state.load(vm_id)
                    if vm is None or vm.status not in BUSY or vm.status is S.CREATING:
                        continue  # a create may wait for its image's pull without the lock
                    log.warning("VM %s was left %s by an API worker that stopped", vm.id, vm.status.value)
                    await self.reconcile_one(vm, meanwhile=WORKER_GONE)
            finally:
                lock.release()

    # -- after the host was away -------------------------------------------------------------
    async def recheck_running(self) -> None:
        """The host agent was away (it restarted): a VM whose QEMU ended meanwhile was never
        reported. Each running or paused VM is checked under its lock, as an exit would be."""
        async with self.svc.db.reading() as s:
            vms = [vm for vm in await VMRepository(s).all() if vm.status in {S.RUNNING, S.PAUSED}]
        for vm in vms:
            async with self.svc._lock(vm.id):
                with self.resync_if_the_database_fails(vm.id):
                    current = await self.svc.state.load(vm.id)
                    if current is None or current.status not in {S.RUNNING, S.PAUSED}:
                        continue
                    if await self.svc.agent.is_running(vm.id):
                        continue
                    why = "the QEMU process ended while the host agent was away"
                    log.warning("VM %s: %s", vm.id, why)
                    await self.svc.state.set(vm.id, S.ERROR, why, pid=None, started_at=None)

    async def _finish_interrupted_create(self, vm: VM) -> None:
        """A create the server did not see through: its row and quota are there, maybe a disk."""
        if await self.svc.agent.has_disk(vm.id):  # complete: disks are renamed into place when whole
            await self.svc.state.set(vm.id, S.STOPPED)
            return
        image = await self.svc.images.get(vm.image_id)
        if image.status is ImageStatus.DOWNLOADING:
            return  # a live server's pull task finishes it (a restart marks such pulls failed)
        if image.status is not ImageStatus.AVAILABLE:
            why = image.status_reason or image.status.value
            await self.svc.state.set(vm.id, S.ERROR, f"image '{image.name}': {why}")
            return
        await self.svc.agent.destroy(vm.id)  # at most a partial disk of this very create
        try:
            self.svc._check_fits(image, vm.disk_gb)
            await self.svc.agent.prepare_disk(vm.id, self.svc.images.media(image), vm.disk_gb)
        except VoidVMError as exc:
            await self.svc.state.set(vm.id, S.ERROR, f"creation was interrupted: {exc.message}")
            return
        log.info("Finished the interrupted creation of VM %s", vm.id)
        await self.svc.state.set(vm.id, S.STOPPED)

    # -- the database went away in the middle of an action -----------------------------------------
    @contextlib.contextmanager
    def resync_if_the_database_fails(self, vm_id: str) -> Iterator[None]:
        """When the database cannot take a state change (PostgreSQL restarting, ...), the row may
        now disagree with the process and files: re-check that VM once the database is back."""
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, ServiceUnavailableError) or database_unavailable(exc):
                self._schedule_resync(vm_id)
            raise

    def _schedule_resync(self, vm_id: str) -> None:
        if vm_id not in self._resyncing:
            self._resyncing.add(vm_id)
            self.svc.tasks.spawn(self._resync(vm_id))

    async def _resync(self, vm_id: str) -> None:
        delay = RESYNC_FIRST_DELAY
        try:
            while True:
                await asyncio.sleep(delay)
                try:
                    async with self.svc._lock(vm_id):
                        vm = await self.svc.state.load(vm_id)
                        if vm is None:
                            self.svc._locks.forget(vm_id, deleted=True)
                            return
                        await self.reconcile_one(vm, meanwhile=DATABASE_AWAY)
                    log.info("VM %s re-checked after the database came back", vm_id)
                    return
                except Exception as exc:
                    if not (isinstance(exc, ServiceUnavailableError) or database_unavailable(exc)):
                        log.warning("Re-checking VM %s failed", vm_id, exc_info=exc)
                        return
                    delay = min(delay * 2, RESYNC_MAX_DELAY)
        finally:
            self._resyncing.discard(vm_id)
