"""VMService: create, change, start/stop/..., delete VMs; follow their processes.

Rules kept here:
- Intent first: the new state (`creating`, `starting`, `deleting`, ...) is written before acting.
- One action at a time per VM (a lock per VM); illegal transitions answer 409 with the state.
- Quota is reserved in the same transaction that inserts the VM, by a conditional UPDATE.
- Users only ever see their own VMs: another user's VM id answers VM_NOT_FOUND.
- New disk space (a create, a growth, a start) is refused while the host is under its free-space
  reserve, before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from voidvm_server.agent.port import (
    AgentEvent,
    EventFeed,
    HostAgent,
    HostReconnected,
    VMExited,
    VMPaused,
    VMPlan,
    VMStats,
)
from voidvm_server.auth.principal import Principal
from voidvm_server.config import Settings
from voidvm_server.domain.models import VM, Image, ImageStatus, VMStatus
from voidvm_server.domain.operations import Operation
from voidvm_server.domain.states import check_action
from voidvm_server.errors import (
    DriverError,
    HypervisorTimeoutError,
    InvalidStateError,
    QuotaExceededError,
    ValidationError,
    VoidVMError,
    vm_not_found,
)
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import UserRepository, VMRepository
from voidvm_server.services import context
from voidvm_server.services.audit import AuditLog
from voidvm_server.services.clock import now
from voidvm_server.services.crash_policy import CrashRestarts
from voidvm_server.services.disk_reserve import DiskReserve
from voidvm_server.services.event_log import EventLog
from voidvm_server.services.ids import is_valid_id, new_id
from voidvm_server.services.images import ImageService
from voidvm_server.services.live_config import LiveConfigStore
from voidvm_server.services.operations import OperationService, Progress
from voidvm_server.services.ssh_ports import SshPorts, free_loopback_port
from voidvm_server.services.tasks import BackgroundTasks
from voidvm_server.services.vm_locks import VMLock, VMLocks
from voidvm_server.services.vm_recovery import VMRecovery
from voidvm_server.services.vm_requests import VMCreate, VMQuery, VMUpdate, parse_sort
from voidvm_server.services.vm_state import VMStateStore

__all__ = ["VMCreate", "VMQuery", "VMService", "VMUpdate", "free_loopback_port"]

log = logging.getLogger(__name__)
VM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
S = VMStatus


def unanswered_power_button(timeout: float) -> str:
    return (
        f"the guest did not answer the ACPI power button within {timeout:g} s (it may still "
        "have been booting); it was powered off"
    )


class VMService:
    def __init__(
        self,
        db: Database,
        agent: HostAgent,
        images: ImageService,
        events: EventLog,
        live: LiveConfigStore,
        settings: Settings,
        reserve: DiskReserve,
        operations: OperationService,
        tasks: BackgroundTasks,
        audit: AuditLog,
    ) -> None:
        self.db = db
        self.audit = audit
        self.operations = operations
        self.tasks = tasks
        self.reserve = reserve
        self.agent = agent
        self.images = images
        self.live = live
        self.settings = settings
        self._locks = VMLocks(settings.data_dir / "locks")
        self._expecting_exit: set[str] = set()
        self._crash_restarts = CrashRestarts()
        self.events = events
        self.state = VMStateStore(db, events)
        self.ssh_ports = SshPorts(db, events, VMLock(self._locks.directory / "ssh-ports.lock"))
        self.recovery = VMRecovery(self)
        # Subscribed now, read once watching starts: nothing the host reports in between is lost.
        self._feed: EventFeed | None = None  # the host's events, while this worker has the duty
        self._watcher: asyncio.Task[None] | None = None

    # -- the audit log -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _audited(
        self, principal: Principal, action: str, target_id: str | None = None
    ) -> AsyncIterator[AuditNote]:
        """Record `action` once, whoever called (REST, WebSocket, CLI): a success, or the failure
        with its message. The body may fill in the target (a create's new id) and a message."""
        entry = AuditNote(target_id)
        try:
            yield entry
        except Exception as exc:
            why = exc.message if isinstance(exc, VoidVMError) else "internal error"
            await self.audit.record(action, user=principal.user, target_type="vm", target_id=entry.target_id,
                                    result="failure", message=why[:200])  # fmt: skip
            raise
        await self.audit.record(action, user=principal.user, target_type="vm", target_id=entry.target_id,
                                message=entry.message)  # fmt: skip

    # -- reading -------------------------------------------------------------------------------
    async def get(self, principal: Principal, vm_id: str) -> VM:
        vm = await self.state.load(vm_id) if is_valid_id(vm_id) else None
        if vm is None or (not principal.is_admin and vm.owner_id != principal.id):
            raise vm_not_found(vm_id)
        return vm

    async def list(self, principal: Principal, query: VMQuery) -> tuple[list[VM], int]:
        for status in query.status:
            if status not in S.__members__.values():
                raise ValidationError("status", f"unknown status '{status}'")
        owner_id: str | None = principal.id
        if principal.is_admin:
            owner_id = await self._owner_id(query.owner) if query.owner else None
        # A search scans every VM it may match: off the event loop. Pages come off an index.
        unit_of_work = self.db.session if query.search else self.db.reading
        async with unit_of_work() as s:
            return await VMRepository(s).list(
                owner_id=owner_id,
                status=query.status,
                search=query.search,
                sort=parse_sort(query.sort),
                offset=(query.page - 1) * query.limit,
                limit=query.limit,
            )

    async def _owner_id(self, owner: str) -> str:
        async with self.db.reading() as s:
            repo = UserRepository(s)
            user = await repo.get(owner) or await repo.by_username(owner)
        return user.id if user else "-none-"

    # -- create --------------------------------------------------------------------------------
    def _check_size(self, cpu: int | None, memory: int | None, disk: int | None) -> None:
        b = self.live.current.vm_bounds
        issues: list[tuple[str, str]] = []
        if cpu is not None and not b.min_cpu <= cpu <= b.max_cpu:
            issues.append(("cpu", f"must be between {b.min_cpu} and {b.max_cpu}"))
        if memory is not None and not b.min_memory_mb <= memory <= b.max_memory_mb:
            issues.append(("memory", f"must be between {b.min_memory_mb} and {b.max_memory_mb} MB"))
        if disk is not None and not b.min_disk_gb <= disk <= b.max_disk_gb:
            issues.append(("disk", f"must be between {b.min_disk_gb} and {b.max_disk_gb} GB"))
        if issues:
            raise ValidationError.many(issues)

    async def create(self, principal: Principal, spec: VMCreate) -> VM:
        async with self._audited(principal, "vm.create") as entry:
            vm = await self._create(principal, spec)
            entry.target_id = vm.id
        return vm

    async def _create(self, principal: Principal, spec: VMCreate) -> VM:
        principal.require("vm:create")
        if not VM_NAME.match(spec.name):
            raise ValidationError("name", "1-63 characters: letters, digits, '-', '_' or '.'")
        if len(spec.description) > 1000:
            raise ValidationError("description", "at most 1000 characters")
        self._check_size(spec.cpu, spec.memory, spec.disk)
        await self.reserve.check()  # before the image: resolving it may start a catalog download
        image = await self.images.resolve(spec.os, requested_by=principal.id)
        if image.status is ImageStatus.ERROR:
            raise ValidationError("os", f"the image '{image.name}' is unusable: {image.status_reason}")
        self._check_fits(image, spec.disk)
        stamp = now()
        vm = VM(
            id=new_id("vm"),
            name=spec.name,
            description=spec.description,
            status=S.CREATING,
            status_reason=None,
            cpu=spec.cpu,
            memory_mb=spec.memory,
            disk_gb=spec.disk,
            os=spec.os or image.name,
            image_id=image.id,
            owner_id=principal.id,
            owner_name=principal.user.username,
            ssh_port=None,
            pid=None,
            created_at=stamp,
            updated_at=stamp,
            started_at=None,
        )
        # The VM's lock is held from the insert until the disk exists: a `DELETE ?force=true` that
        # sees the row in the list waits for the disk instead of racing it.
        lock = self._lock(vm.id)
        async with lock:
            try:
                async with self.events.session() as s:
                    if not await UserRepository(s).reserve(principal.id, spec.cpu, spec.memory, spec.disk):
                        raise self._quota_error(principal)
                    await VMRepository(s).add(vm)
                    await self.state.tell(s, vm, S.CREATING, None)
            except BaseException:
                self._locks.forget(vm.id, deleted=True)
                raise
            if image.status is ImageStatus.DOWNLOADING:
                starter = principal if spec.auto_start else None
                self.tasks.spawn(self._finish_create_after_pull(vm, starter))
                return vm
            with self.recovery.resync_if_the_database_fails(vm.id):
                await self._test_pause("after-create-insert")
                try:
                    await self.agent.prepare_disk(vm.id, self.images.media(image), spec.disk)
                except BaseException:
                    await asyncio.shield(self._forget(vm))
                    raise
                await self._test_pause("after-create-disk")
                vm = await self.state.set(vm.id, S.STOPPED)
        if spec.auto_start:
            return await self._begin_auto_start(principal, vm)
        return vm

    def _check_fits(self, image: Image, disk_gb: int) -> None:
        needed = math.ceil(image.virtual_size_bytes / 1024**3)
        if image.virtual_size_bytes and disk_gb < needed:
            raise ValidationError("disk", f"the image '{image.name}' needs at least {needed} GB")

    def _quota_error(self, principal: Principal) -> QuotaExceededError:
        q, u = principal.user.quota, principal.user.usage
        return QuotaExceededError(
            f"Quota exceeded: you may own at most {q.max_vms} VMs",
            details={
                "quota": {"vms": q.max_vms, "cpus": q.max_cpus,
                          "memory_mb": q.max_memory_mb, "disk_gb": q.max_disk_gb},
                "used": {"vms": u.vms, "cpus": u.cpus, "memory_mb": u.memory_mb, "disk_gb": u.disk_gb},
            },
        )  # fmt: skip

    async def _forget(self, vm: VM) -> None:
        """Undo a create that failed: no row, no quota, no files."""
        async with self.events.session() as s:
            if await VMRepository(s).delete(vm.id):  # released once, even if a delete came first
                await UserRepository(s).release(vm.owner_id, vm.cpu, vm.memory_mb, vm.disk_gb)
                await self.state.tell_deleted(s, vm, None)
        await self.agent.destroy(vm.id)
        self._locks.forget(vm.id, deleted=True)

    async def _finish_create_after_pull(self, vm: VM, starter: Principal | None) -> None:
        """Finish a create that waited for its image; `starter` asked for `auto_start`."""
        try:
            ready = await self._complete_create_after_pull(vm)
        except VoidVMError as exc:  # never leave the VM 'creating' with nobody to finish it
            log.warning("Finishing the create of %s after its image pull failed: %s", vm.id, exc.message)
            with contextlib.suppress(VoidVMError):  # unless a forced delete took it meanwhile
                await self.state.set(vm.id, S.ERROR, f"the image could not be made ready: {exc.message}")
            return
        if ready and starter is not None:
            await self._begin_auto_start(starter, vm)

    async def _complete_create_after_pull(self, vm: VM) -> bool:
        """Make the disk once the image is there; True when the VM ended up `stopped`."""
        image = await self.images.wait_ready(vm.image_id)
        async with self._lock(vm.id):
            with self.recovery.resync_if_the_database_fails(vm.id):
                current = await self.state.load(vm.id)
                if current is None or current.status is not S.CREATING:
                    if current is None:
                        self._locks.forget(vm.id, deleted=True)
                    return False  # deleted (DELETE ?force=true) while the image was downloading
                if image.status is not ImageStatus.AVAILABLE:
                    await self.state.set(vm.id, S.ERROR, f"image '{image.name}': {image.status_reason}")
                    return False
                try:
                    self._check_fits(image, vm.disk_gb)
                    await self.agent.prepare_disk(vm.id, self.images.media(image), vm.disk_gb)
                except VoidVMError as exc:
                    await self.state.set(vm.id, S.ERROR, exc.message)
                    return False
                await self.state.set(vm.id, S.STOPPED)
                return True

    async def _begin_auto_start(self, principal: Principal, vm: VM) -> VM:
        """Start a just-created VM in the background; the VM as it is then (`starting`)."""
        try:
            return await self.action(principal, vm.id, "start", wait=False)
        except VoidVMError as exc:  # the VM exists all the same: it stays `stopped`
            log.warning("Auto-start of %s failed: %s", vm.id, exc.message)
            return await self.state.load(vm.id) or vm  # gone if a forced delete came first

    # -- update --------------------------------------------------------------------------------
    async def update(self, principal: Principal, vm_id: str, changes: VMUpdate) -> VM:
        async with self._audited(principal, "vm.update", vm_id):
            return await self._update(principal, vm_id, changes)

    async def _update(self, principal: Principal, vm_id: str, changes: VMUpdate) -> VM:
        vm = await self.get(principal, vm_id)
        async with self._lock(vm.id):
            vm = await self.state.reload(vm.id)
            values: dict[str, Any] = {}
            if changes.name is not None and changes.name != vm.name:
                if not VM_NAME.match(changes.name):
                    raise ValidationError("name", "1-63 characters: letters, digits, '-', '_' or '.'")
                values["name"] = changes.name
            if changes.description is not None:
                if len(changes.description) > 1000:
                    raise ValidationError("description", "at most 1000 characters")
                values["description"] = changes.description
            cpu = changes.cpu if changes.cpu not in (None, vm.cpu) else None
            memory = changes.memory if changes.memory not in (None, vm.memory_mb) else None
            disk = changes.disk if changes.disk not in (None, vm.disk_gb) else None
            hardware = cpu is not None or memory is not None or disk is not None
            if hardware:
                check_action("update_hardware", vm.status)
                self._check_size(cpu, memory, disk)
                if disk is not None and disk < vm.disk_gb:
                    raise ValidationError("disk", f"can only grow (currently {vm.disk_gb} GB)")
                if disk is not None:
                    await self.reserve.check()
            async with self.events.session() as s:
                if hardware:
                    d_cpu = (cpu or vm.cpu) - vm.cpu
                    d_mem = (memory or vm.memory_mb) - vm.memory_mb
                    d_disk = (disk or vm.disk_gb) - vm.disk_gb
                    if not await UserRepository(s).resize(vm.owner_id, d_cpu, d_mem, d_disk):
                        raise QuotaExceededError("The change would exceed your quota")
                    values.update(cpu=cpu or vm.cpu, memory_mb=memory or vm.memory_mb,
                                  disk_gb=disk or vm.disk_gb)  # fmt: skip
                if values:
                    values["updated_at"] = now()
                    await VMRepository(s).update(vm.id, **values)  # a name conflict stops here
                if disk is not None:
                    await self.agent.grow_disk(vm.id, disk)  # last: its failure undoes the row
                updated = await VMRepository(s).get(vm.id)
                if updated is None:
                    raise vm_not_found(vm.id)
                # Subscribers see renames and resizes too.
                if values:
                    await self.state.tell(s, updated, updated.status, updated.status)
            return updated

    # -- actions -------------------------------------------------------------------------------
    def _lock(self, vm_id: str) -> VMLock:
        return self._locks(vm_id)

    async def action(
        self,
        principal: Principal,
        vm_id: str,
        action: str,
        *,
        wait: bool = True,
        force: bool = False,
        timeout: float | None = None,
    ) -> VM:
        """Run one lifecycle action. With wait=False, return once it is under way (`submit`)."""
        if not wait:
            vm, _ = await self.submit(principal, vm_id, action, force=force, timeout=timeout)
            return vm
        async with self._audited(principal, f"vm.{action}", vm_id):
            vm, work, lock = await self._begin_action(principal, vm_id, action, force, timeout)
            try:
                with self.recovery.resync_if_the_database_fails(vm.id):
                    return await work.run(vm)
            finally:
                lock.release()

    async def submit(
        self,
        principal: Principal,
        vm_id: str,
        action: str,
        *,
        force: bool = False,
        timeout: float | None = None,
    ) -> tuple[VM, Operation]:
        """Begin one lifecycle action and finish it as an operation: the VM as the action left
        it when under way (`starting`, ...) and the operation to wait on."""
        async with self._audited(principal, f"vm.{action}", vm_id) as entry:
            vm, op = await self._submit(principal, vm_id, action, force, timeout)
            entry.message = f"accepted as {op.id}"
        return vm, op

    async def _submit(
        self, principal: Principal, vm_id: str, action: str, force: bool, timeout: float | None
    ) -> tuple[VM, Operation]:
        vm, work, lock = await self._begin_action(principal, vm_id, action, force, timeout)
        try:
            op = await self.operations.begin(
                f"vm.{action}", resource_type="vm", resource_id=vm.id, owner_id=vm.owner_id
            )
        except BaseException:
            lock.release()
            raise

        async def finish(_: Progress) -> dict[str, Any]:
            with self.recovery.resync_if_the_database_fails(vm.id):
                done = await work.run(vm)
            return {"vm_id": done.id, "status": done.status.value}

        # Released when the task ends, however: even one cancelled before its first step.
        self.operations.run(op, finish).add_done_callback(lambda _: lock.release())
        return vm, op

    async def _begin_action(
        self, principal: Principal, vm_id: str, action: str, force: bool, timeout: float | None
    ) -> tuple[VM, _Work, VMLock]:
        """Check and record an action's intent; the VM then, its work, and the VM's lock (held)."""
        permission = {"stop": "vm:stop", "pause": "vm:stop"}.get(action, "vm:start")
        principal.require(permission)
        vm = await self.get(principal, vm_id)
        lock = self._lock(vm.id)
        await lock.acquire()
        try:
            vm = await self.state.reload(vm.id)
            check_action(action, vm.status)
            if action == "start":
                # Refused before the intent is written: the VM keeps its status and its reason.
                await self.images.get_available(vm.image_id)
                await self.reserve.check()
            timeout = self.settings.stop_timeout_seconds if timeout is None else timeout
            work = self._plan(vm, action, force, timeout)
            with self.recovery.resync_if_the_database_fails(vm.id):
                vm = await work.begin()
        except BaseException:
            lock.release()
            raise
        return vm, work, lock

    def _plan(self, vm: VM, action: str, force: bool, timeout: float) -> _Work:
        async def same() -> VM:
            return vm

        match action:
            case "start":
                # The intent holds the port QEMU will forward (and, as its reason, why the port
                # moved), so a server killed after the spawn still knows it.
                return _Work(
                    lambda: self._begin_start(vm),
                    lambda begun: self._start(begun, reason=begun.status_reason, port_recorded=True),
                )
            case "stop":
                return _Work(
                    lambda: self.state.set(vm.id, S.STOPPING, expected=vm.status),
                    lambda _: self._stop(vm, force, timeout),
                )
            case "restart":
                return _Work(
                    lambda: self.state.set(vm.id, S.REBOOTING, expected=vm.status),
                    lambda _: self._restart(vm, force, timeout),
                )
            case "pause":
                return _Work(same, lambda _: self._simple(vm, self.agent.pause, S.PAUSED))
            case "resume":
                return _Work(same, lambda _: self._simple(vm, self.agent.resume, S.RUNNING))
            case "reset":
                return _Work(same, lambda _: self._simple(vm, self.agent.reset, vm.status))
        raise ValidationError("action", f"unknown action '{action}'")

    async def _begin_start(self, vm: VM) -> VM:
        """The start's intent: `starting`, with the SSH port it will forward."""
        image = await self.images.get(vm.image_id)
        async with self.ssh_ports.claim(vm, image) as claim:
            return await self.state.set(
                vm.id, S.STARTING, claim.note, expected=vm.status, ssh_port=claim.port
            )

    async def _claim_ssh_port(self, vm: VM, image: Image) -> tuple[VM, str | None]:
        """For a start with no intent of its own (restarts): the port, recorded before the spawn."""
        async with self.ssh_ports.claim(vm, image) as claim:
            if claim.port != vm.ssh_port:
                async with self.db.session() as s:
                    await VMRepository(s).update(vm.id, ssh_port=claim.port)
        return dataclasses.replace(vm, ssh_port=claim.port), claim.note

    async def _start(self, vm: VM, *, reason: str | None = None, port_recorded: bool = False) -> VM:
        """Spawn the VM's QEMU; `reason` becomes the running VM's. With `port_recorded`, the
        intent already holds the port to forward (`vm.ssh_port`)."""
        try:
            image = await self.images.get(vm.image_id)
            if not port_recorded:
                vm, note = await self._claim_ssh_port(vm, image)
                reason = "; ".join(r for r in (reason, note) if r) or None
            plan = VMPlan(vm.id, vm.cpu, vm.memory_mb, self.images.media(image), vm.ssh_port)
            await self._test_pause("before-spawn")
            pid = await self.agent.start(plan)
        except BaseException as exc:
            why = "internal error while starting"
            if isinstance(exc, VoidVMError):
                why = f"{exc.message}: {exc.details}" if exc.details else exc.message
            await asyncio.shield(self.state.set(vm.id, S.ERROR, why, pid=None))
            raise
        await self._test_pause("after-spawn")
        return await self.state.set(vm.id, S.RUNNING, reason, pid=pid, started_at=now())

    async def _power_off(self, vm: VM, force: bool, timeout: float) -> str | None:
        """The ACPI power button, then a kill after `timeout` s (at once with `force` or a timeout
        of 0). Returns why it came to a kill nobody asked for, else None."""
        if not await self.agent.is_running(vm.id):
            return None  # it has just ended on its own; its exit report will find the VM stopped
        self._expecting_exit.add(vm.id)
        try:
            if force or timeout <= 0:
                await self.agent.kill(vm.id)
                return None
            why = await self._press_power_button(vm, timeout)
            if why is not None:
                await self.agent.kill(vm.id)
            return why
        finally:
            self._expecting_exit.discard(vm.id)

    async def _press_power_button(self, vm: VM, timeout: float) -> str | None:
        """None once the guest has powered off; else why it still has to be killed."""
        try:
            await self.agent.powerdown(vm.id)
            if await self.agent.wait_exit(vm.id, timeout):
                return None
        except HypervisorTimeoutError:
            raise  # QEMU itself hangs (not the guest): only `force` may kill it
        except DriverError as exc:
            log.warning("Graceful stop of %s failed (%s); killing it", vm.id, exc.message)
            return f"the graceful stop failed ({exc.message}); it was powered off"
        log.info("VM %s ignored the power button for %gs; killing it", vm.id, timeout)
        return unanswered_power_button(timeout)

    async def _stop(self, vm: VM, force: bool, timeout: float) -> VM:
        why = await self._power_off_or_undo(vm, force, timeout)
        # The SSH port stays in the row: the VM takes it again at its next start.
        return await self.state.set(vm.id, S.STOPPED, why, pid=None, started_at=None)

    async def _restart(self, vm: VM, force: bool, timeout: float) -> VM:
        why = await self._power_off_or_undo(vm, force, timeout)
        return await self._start(vm, reason=f"{why}, then started again" if why else None)

    async def _power_off_or_undo(self, vm: VM, force: bool, timeout: float) -> str | None:
        """Power off; when QEMU does not answer, put back the status the VM had (it still runs)."""
        try:
            return await self._power_off(vm, force, timeout)
        except HypervisorTimeoutError:
            if await self.agent.is_running(vm.id):
                await asyncio.shield(self.state.set(vm.id, vm.status, vm.status_reason))
                raise
            return None  # it ended meanwhile: the stop happened after all

    async def _simple(self, vm: VM, call: Callable[[str], Awaitable[None]], target: VMStatus) -> VM:
        await call(vm.id)
        return await self.state.set(vm.id, target) if target != vm.status else vm

    # -- delete --------------------------------------------------------------------------------
    async def delete(self, principal: Principal, vm_id: str, *, force: bool = False) -> None:
        async with self._audited(principal, "vm.delete", vm_id):
            await self._delete(principal, vm_id, force=force)

    async def _delete(self, principal: Principal, vm_id: str, *, force: bool) -> None:
        principal.require("vm:delete")
        vm = await self.get(principal, vm_id)
        async with self._lock(vm.id):
            with self.recovery.resync_if_the_database_fails(vm.id):
                await self._delete_locked(vm.id, force)
        self._locks.forget(vm.id, deleted=True)

    async def _delete_locked(self, vm_id: str, force: bool) -> None:
        vm = await self.state.reload(vm_id)
        expected = vm.status
        if force and vm.status in {S.RUNNING, S.PAUSED}:
            await self.state.set(vm.id, S.STOPPING, expected=vm.status)
            await self._power_off(vm, True, 0)
            expected = S.STOPPING
        elif force and vm.status is S.CREATING:
            pass  # a pull in progress (other creates hold the lock until done): the row is enough
        else:
            check_action("delete", vm.status)
        await self.state.set(vm.id, S.DELETING, expected=expected)
        await self._remove(vm)

    async def _remove(self, vm: VM) -> None:
        await self.agent.destroy(vm.id)
        await self._test_pause("after-delete-files")
        async with self.events.session() as s:
            if await VMRepository(s).delete(vm.id):
                await UserRepository(s).release(vm.owner_id, vm.cpu, vm.memory_mb, vm.disk_gb)
                await self.state.tell_deleted(s, vm, S.DELETING)
        self._crash_restarts.forget(vm.id)

    # -- live data -----------------------------------------------------------------------------
    async def live_status(self, principal: Principal, vm_id: str) -> dict[str, Any]:
        vm = await self.get(principal, vm_id)
        running = await self.agent.is_running(vm.id)
        return {
            "id": vm.id,
            "status": vm.status.value,
            "status_reason": vm.status_reason,
            "pid": vm.pid if running else None,
            "qemu_status": await self.agent.query_status(vm.id) if running else None,
            "uptime": (now() - vm.started_at).total_seconds() if running and vm.started_at else 0,
        }

    async def stats(self, principal: Principal, vm_id: str) -> tuple[VM, VMStats | None, int | None]:
        """The VM, its live usage (None when it is not running) and its disk's allocated bytes."""
        vm = await self.get(principal, vm_id)
        allocated = await self.agent.disk_allocated_bytes(vm.id)
        if not await self.agent.is_running(vm.id):
            return vm, None, allocated
        return vm, await self.agent.stats(vm.id), allocated

    async def is_process_running(self, vm_id: str) -> bool:
        """Whether the VM's process runs on its host now (its row may still say otherwise)."""
        return await self.agent.is_running(vm_id)

    async def get_running(self, principal: Principal, vm_id: str) -> VM:
        """The VM, when its process runs (a console needs one); else 409 VM_NOT_RUNNING."""
        vm = await self.get(principal, vm_id)
        if not await self.agent.is_running(vm.id):
            raise InvalidStateError("The VM is not running", code="VM_NOT_RUNNING", current=vm.status.value)
        return vm

    async def open_display(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to the VM's VNC server, for a caller that has authorized the viewer."""
        return await self.agent.open_vnc(vm_id)

    # -- what the host reports -----------------------------------------------------------------
    def start_watching(self) -> None:
        """Read the host's events (exits, pauses) from now on (`HostDuty`: one worker does)."""
        if self._watcher is None:
            self._feed = self.agent.subscribe()
            self._watcher = asyncio.create_task(self._watch(self._feed), name="vm-events")

    async def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self, feed: EventFeed) -> None:
        while True:
            event = await feed.next()
            try:
                self.handle_host_event(event)
            except Exception:  # one bad report must not end the watching of every VM
                log.exception("Handling %s failed", event)

    def handle_host_event(self, event: AgentEvent) -> None:
        """What the host reported on its own: an exit or a pause (the watcher's, and tests')."""
        if isinstance(event, VMExited):
            self._on_process_exit(event.vm_id, event.pid, event.clean, event.reason)
        elif isinstance(event, VMPaused):
            self.tasks.spawn(self._record_pause(event.vm_id, event.reason))
        elif isinstance(event, HostReconnected):
            self.tasks.spawn(self.recovery.recheck_running())

    def _on_process_exit(self, vm_id: str, pid: int, clean: bool, reason: str) -> None:
        if vm_id in self._expecting_exit:
            return  # the stop/restart/delete that asked for it records the outcome
        self.tasks.spawn(self._record_exit(vm_id, pid, clean, reason))

    async def _record_pause(self, vm_id: str, reason: str) -> None:
        """QEMU paused the guest itself (a disk write found the host's disk full)."""
        # This task's own context, copied from the request that started the VM: nobody asked.
        context.user_name.set(None)
        context.request_id.set(None)
        async with self._lock(vm_id):
            with self.recovery.resync_if_the_database_fails(vm_id):
                vm = await self.state.load(vm_id)
                # Behind the lock: an action that ran meanwhile (a stop, a resume that failed
                # again) decided the status, unless the VM still runs or sits paused.
                if (
                    vm is None
                    or vm.status not in {S.RUNNING, S.PAUSED}
                    or not await self.agent.is_running(vm_id)
                ):
                    return
                log.warning("VM %s paused by the hypervisor: %s", vm_id, reason)
                await self.state.set(vm_id, S.PAUSED, reason)

    async def _record_exit(self, vm_id: str, pid: int, clean: bool, reason: str) -> None:
        async with self._lock(vm_id):
            with self.recovery.resync_if_the_database_fails(vm_id):
                await self._record_exit_locked(vm_id, pid, clean, reason)

    async def _record_exit_locked(self, vm_id: str, pid: int, clean: bool, reason: str) -> None:
        vm = await self.state.load(vm_id)
        if vm is None:
            self._locks.forget(vm_id, deleted=True)
            return
        if vm.status in {S.STOPPED, S.ERROR, S.DELETING}:
            return
        if vm.pid is not None and vm.pid != pid:
            return  # a late report of an earlier process: the VM was started again since
        if await self.agent.is_running(vm_id):
            return  # a late report: the VM was started again since that process ended
        values = {"pid": None, "started_at": None}  # the SSH port stays the VM's
        if clean:
            await self.state.set(vm_id, S.STOPPED, "the guest powered itself off", **values)
            return
        log.warning("VM %s: %s", vm_id, reason)
        delay, refusal = self._crash_restarts.plan(vm_id, self.live.current.restart_policy)
        await self.state.set(vm_id, S.ERROR, f"{reason}; {refusal}" if refusal else reason, **values)
        if delay is not None:
            self.tasks.spawn(self._restart_after_crash(vm_id, delay, reason))

    async def _restart_after_crash(self, vm_id: str, delay: float, crash: str) -> None:
        await asyncio.sleep(delay)
        async with self._lock(vm_id):
            with self.recovery.resync_if_the_database_fails(vm_id):
                vm = await self.state.load(vm_id)
                if vm is None or vm.status is not S.ERROR:
                    return  # deleted, or started or stopped by someone meanwhile
                if self.live.current.restart_policy.mode != "on-crash":
                    return  # switched off during the backoff
                log.warning("VM %s: restarting it after a crash (%s)", vm_id, crash)
                vm = await self.state.set(vm_id, S.STARTING, f"automatic restart after: {crash}")
                try:
                    await self._start(vm)
                except VoidVMError as exc:
                    log.warning("Automatic restart of %s failed: %s", vm_id, exc.message)

    async def _test_pause(self, point: str) -> None:
        """Test-only (VOIDVM_TEST_PAUSE_AT): announce this point in a marker file, then hang here
        for good so that a fault test can kill -9 the server exactly at it."""
        if self.settings.test_pause_at != point:
            return
        marker = self.settings.data_dir / f"paused-at-{point}"
        marker.write_text(f"{os.getpid()}\n")
        log.warning("VOIDVM_TEST_PAUSE_AT: paused at %s for good", point)
        await asyncio.Event().wait()


@dataclass
class AuditNote:
    """What an audited call found out while it ran."""

    target_id: str | None
    message: str = ""


@dataclass
class _Work:
    """An action in two steps: `begin` records the intent, `run` does the work."""

    begin: Callable[[], Awaitable[VM]]
    run: Callable[[VM], Awaitable[VM]]  # given the VM as `begin` left it
