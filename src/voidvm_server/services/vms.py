"""VMService: create, change, start/stop/..., delete VMs; follow their processes.

Rules kept here:
- Intent first: the new state (`creating`, `starting`, `deleting`, ...) is written before acting.
- One action at a time per VM (a lock per VM); illegal transitions answer 409 with the state.
- Quota is reserved in the same transaction that inserts the VM, by a conditional UPDATE.
- Users only ever see their own VMs: another user's VM id answers VM_NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voidvm_server.auth.principal import Principal
from voidvm_server.config import Settings
from voidvm_server.domain.models import VM, Image, ImageStatus, VMStatus
from voidvm_server.domain.states import check_action
from voidvm_server.drivers.base import Driver, VMSpec, VMStats
from voidvm_server.errors import (
    DriverError,
    QuotaExceededError,
    ValidationError,
    VoidVMError,
    vm_not_found,
)
from voidvm_server.events.bus import EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import SORTABLE, UserRepository, VMRepository
from voidvm_server.services.clock import now
from voidvm_server.services.ids import is_valid_id, new_id
from voidvm_server.services.images import ImageService
from voidvm_server.services.live_config import LiveConfigStore

log = logging.getLogger(__name__)
VM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
S = VMStatus


@dataclass
class VMCreate:
    name: str
    cpu: int
    memory: int
    disk: int
    os: str | None = None
    description: str = ""
    auto_start: bool = False


@dataclass
class VMUpdate:
    name: str | None = None
    description: str | None = None
    cpu: int | None = None
    memory: int | None = None
    disk: int | None = None


@dataclass
class VMQuery:
    page: int = 1
    limit: int = 20
    status: list[str] = field(default_factory=list)
    search: str | None = None
    sort: str = "-created_at"
    owner: str | None = None


def parse_sort(sort: str) -> list[tuple[str, bool]]:
    keys: list[tuple[str, bool]] = []
    for part in filter(None, (p.strip() for p in sort.split(","))):
        desc = part.startswith("-")
        key = part.lstrip("+-")
        if key == "memory_mb":
            key = "memory"
        if key not in SORTABLE:
            raise ValidationError("sort", f"unknown field '{key}'; use one of {sorted(SORTABLE)}")
        keys.append((key, desc))
    return keys


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VMService:
    def __init__(
        self,
        db: Database,
        driver: Driver,
        images: ImageService,
        bus: EventBus,
        live: LiveConfigStore,
        settings: Settings,
    ) -> None:
        self.db = db
        self.driver = driver
        self.images = images
        self.bus = bus
        self.live = live
        self.settings = settings
        self._locks: dict[str, asyncio.Lock] = {}
        self._expecting_exit: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        driver.set_exit_handler(self._on_process_exit)

    # -- reading -------------------------------------------------------------------------------
    async def get(self, principal: Principal, vm_id: str) -> VM:
        vm = await self._load(vm_id) if is_valid_id(vm_id) else None
        if vm is None or (not principal.is_admin and vm.owner_id != principal.id):
            raise vm_not_found(vm_id)
        return vm

    async def _load(self, vm_id: str) -> VM | None:
        async with self.db.session() as s:
            return await VMRepository(s).get(vm_id)

    async def _reload(self, vm_id: str) -> VM:
        vm = await self._load(vm_id)
        if vm is None:
            raise vm_not_found(vm_id)
        return vm

    async def list(self, principal: Principal, query: VMQuery) -> tuple[list[VM], int]:
        for status in query.status:
            if status not in S.__members__.values():
                raise ValidationError("status", f"unknown status '{status}'")
        owner_id: str | None = principal.id
        if principal.is_admin:
            owner_id = await self._owner_id(query.owner) if query.owner else None
        async with self.db.session() as s:
            return await VMRepository(s).list(
                owner_id=owner_id,
                status=query.status,
                search=query.search,
                sort=parse_sort(query.sort),
                offset=(query.page - 1) * query.limit,
                limit=query.limit,
            )

    async def _owner_id(self, owner: str) -> str:
        async with self.db.session() as s:
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
        principal.require("vm:create")
        if not VM_NAME.match(spec.name):
            raise ValidationError("name", "1-63 characters: letters, digits, '-', '_' or '.'")
        if len(spec.description) > 1000:
            raise ValidationError("description", "at most 1000 characters")
        self._check_size(spec.cpu, spec.memory, spec.disk)
        image = await self.images.resolve(spec.os)
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
        async with self.db.session() as s:
            if not await UserRepository(s).reserve(principal.id, spec.cpu, spec.memory, spec.disk):
                raise self._quota_error(principal)
            await VMRepository(s).add(vm)
        self._publish(vm, S.CREATING, None)
        if image.status is ImageStatus.DOWNLOADING:
            self._spawn(self._finish_create_after_pull(vm, spec.auto_start))
            return vm
        try:
            await self.driver.prepare_disk(vm.id, self.images.media(image), spec.disk)
        except BaseException:
            await self._forget(vm)
            raise
        vm = await self._set_status(vm.id, S.STOPPED)
        if spec.auto_start:
            self._spawn(self._auto_start(principal, vm.id))
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
        async with self.db.session() as s:
            await VMRepository(s).delete(vm.id)
            await UserRepository(s).release(vm.owner_id, vm.cpu, vm.memory_mb, vm.disk_gb)
        await self.driver.destroy(vm.id)
        self.bus.publish("vm-status", {"vmId": vm.id, "status": "deleted"}, vm_id=vm.id, owner_id=vm.owner_id)

    async def _finish_create_after_pull(self, vm: VM, auto_start: bool) -> None:
        image = await self.images.wait_ready(vm.image_id)
        if image.status is not ImageStatus.AVAILABLE:
            await self._set_status(vm.id, S.ERROR, f"image '{image.name}': {image.status_reason}")
            return
        try:
            self._check_fits(image, vm.disk_gb)
            await self.driver.prepare_disk(vm.id, self.images.media(image), vm.disk_gb)
        except VoidVMError as exc:
            await self._set_status(vm.id, S.ERROR, exc.message)
            return
        await self._set_status(vm.id, S.STOPPED)

    async def _auto_start(self, principal: Principal, vm_id: str) -> None:
        try:
            await self.action(principal, vm_id, "start")
        except VoidVMError as exc:
            log.warning("Auto-start of %s failed: %s", vm_id, exc.message)

    # -- update --------------------------------------------------------------------------------
    async def update(self, principal: Principal, vm_id: str, changes: VMUpdate) -> VM:
        vm = await self.get(principal, vm_id)
        async with self._lock(vm.id):
            vm = await self._reload(vm.id)
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
            async with self.db.session() as s:
                if hardware:
                    d_cpu = (cpu or vm.cpu) - vm.cpu
                    d_mem = (memory or vm.memory_mb) - vm.memory_mb
                    d_disk = (disk or vm.disk_gb) - vm.disk_gb
                    if not await UserRepository(s).resize(vm.owner_id, d_cpu, d_mem, d_disk):
                        raise QuotaExceededError("The change would exceed your quota")
                    values.update(cpu=cpu or vm.cpu, memory_mb=memory or vm.memory_mb,
                                  disk_gb=disk or vm.disk_gb)  # fmt: skip
                if disk is not None:
                    await self.driver.grow_disk(vm.id, disk)  # inside the txn: undone on failure
                if values:
                    values["updated_at"] = now()
                    await VMRepository(s).update(vm.id, **values)
            return await self._reload(vm.id)

    # -- actions -------------------------------------------------------------------------------
    def _lock(self, vm_id: str) -> asyncio.Lock:
        return self._locks.setdefault(vm_id, asyncio.Lock())

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
        """Run one lifecycle action. With wait=False, return once it is under way."""
        permission = {"stop": "vm:stop", "pause": "vm:stop"}.get(action, "vm:start")
        principal.require(permission)
        vm = await self.get(principal, vm_id)
        lock = self._lock(vm.id)
        await lock.acquire()
        try:
            vm = await self._reload(vm.id)
            check_action(action, vm.status)
            work = self._plan(vm, action, force, timeout or self.settings.stop_timeout_seconds)
            vm = await work.begin()
        except BaseException:
            lock.release()
            raise
        if not wait:
            self._spawn(self._finish(work.run, lock))
            return vm
        try:
            return await work.run()
        finally:
            lock.release()

    async def _finish(self, run: Callable[[], Awaitable[VM]], lock: asyncio.Lock) -> None:
        try:
            await run()
        except VoidVMError as exc:
            log.warning("Background action failed: %s", exc.message)
        finally:
            lock.release()

    def _plan(self, vm: VM, action: str, force: bool, timeout: float) -> _Work:
        async def same() -> VM:
            return vm

        match action:
            case "start":
                return _Work(lambda: self._set_status(vm.id, S.STARTING), lambda: self._start(vm))
            case "stop":
                return _Work(
                    lambda: self._set_status(vm.id, S.STOPPING),
                    lambda: self._stop(vm, force, timeout),
                )
            case "restart":
                return _Work(
                    lambda: self._set_status(vm.id, S.REBOOTING),
                    lambda: self._restart(vm, force, timeout),
                )
            case "pause":
                return _Work(same, lambda: self._simple(vm, self.driver.pause, S.PAUSED))
            case "resume":
                return _Work(same, lambda: self._simple(vm, self.driver.resume, S.RUNNING))
            case "reset":
                return _Work(same, lambda: self._simple(vm, self.driver.reset, vm.status))
        raise ValidationError("action", f"unknown action '{action}'")

    async def _start(self, vm: VM) -> VM:
        image = await self.images.get(vm.image_id)
        ssh_port = free_loopback_port()
        spec = VMSpec(vm.id, vm.cpu, vm.memory_mb, self.images.media(image), ssh_port)
        try:
            pid = await self.driver.start(spec)
        except BaseException as exc:
            reason = "internal error while starting"
            if isinstance(exc, VoidVMError):
                reason = f"{exc.message}: {exc.details}" if exc.details else exc.message
            await asyncio.shield(self._set_status(vm.id, S.ERROR, reason))
            raise
        return await self._set_status(vm.id, S.RUNNING, pid=pid, ssh_port=ssh_port, started_at=now())

    async def _power_off(self, vm: VM, force: bool, timeout: float) -> None:
        if not self.driver.is_running(vm.id):
            return  # it has just ended on its own; its exit report will find the VM stopped
        self._expecting_exit.add(vm.id)
        try:
            if not force:
                try:
                    await self.driver.powerdown(vm.id)
                    if await self.driver.wait_exit(vm.id, timeout):
                        return
                    log.info("VM %s ignored the power button for %gs; killing it", vm.id, timeout)
                except DriverError as exc:
                    log.warning("Graceful stop of %s failed (%s); killing it", vm.id, exc.message)
            await self.driver.kill(vm.id)
        finally:
            self._expecting_exit.discard(vm.id)

    async def _stop(self, vm: VM, force: bool, timeout: float) -> VM:
        await self._power_off(vm, force, timeout)
        return await self._set_status(vm.id, S.STOPPED, pid=None, ssh_port=None, started_at=None)

    async def _restart(self, vm: VM, force: bool, timeout: float) -> VM:
        await self._power_off(vm, force, timeout)
        return await self._start(vm)

    async def _simple(self, vm: VM, call: Callable[[str], Awaitable[None]], target: VMStatus) -> VM:
        await call(vm.id)
        return await self._set_status(vm.id, target) if target != vm.status else vm

    # -- delete --------------------------------------------------------------------------------
    async def delete(self, principal: Principal, vm_id: str, *, force: bool = False) -> None:
        principal.require("vm:delete")
        vm = await self.get(principal, vm_id)
        async with self._lock(vm.id):
            vm = await self._reload(vm.id)
            if force and vm.status in {S.RUNNING, S.PAUSED}:
                await self._set_status(vm.id, S.STOPPING)
                await self._power_off(vm, True, 0)
            elif force and vm.status is S.CREATING:
                pass  # a pull in progress: deleting the row is enough
            else:
                check_action("delete", vm.status)
            await self._set_status(vm.id, S.DELETING)
            await self._remove(vm)
        self._locks.pop(vm.id, None)

    async def _remove(self, vm: VM) -> None:
        await self.driver.destroy(vm.id)
        async with self.db.session() as s:
            await VMRepository(s).delete(vm.id)
            await UserRepository(s).release(vm.owner_id, vm.cpu, vm.memory_mb, vm.disk_gb)
        self.bus.publish(
            "vm-status",
            {"vmId": vm.id, "status": "deleted", "previous": S.DELETING.value},
            vm_id=vm.id,
            owner_id=vm.owner_id,
        )

    # -- live data -----------------------------------------------------------------------------
    async def live_status(self, principal: Principal, vm_id: str) -> dict[str, Any]:
        vm = await self.get(principal, vm_id)
        running = self.driver.is_running(vm.id)
        return {
            "id": vm.id,
            "status": vm.status.value,
            "status_reason": vm.status_reason,
            "pid": vm.pid if running else None,
            "qemu_status": await self.driver.query_status(vm.id) if running else None,
            "uptime": (now() - vm.started_at).total_seconds() if running and vm.started_at else 0,
        }

    async def stats(self, principal: Principal, vm_id: str) -> tuple[VM, VMStats | None]:
        vm = await self.get(principal, vm_id)
        if not self.driver.is_running(vm.id):
            return vm, None
        return vm, await self.driver.stats(vm.id)

    # -- state and events ----------------------------------------------------------------------
    async def _set_status(self, vm_id: str, status: VMStatus, reason: str | None = None, **values: Any) -> VM:
        async with self.db.session() as s:
            repo = VMRepository(s)
            before = await repo.get(vm_id)
            await repo.update(vm_id, status=status.value, status_reason=reason,
                              updated_at=now(), **values)  # fmt: skip
            vm = await repo.get(vm_id)
        if vm is None:
            raise vm_not_found(vm_id)
        self._publish(vm, status, before.status if before else None)
        return vm

    def _publish(self, vm: VM, status: VMStatus, previous: VMStatus | None) -> None:
        self.bus.publish(
            "vm-status",
            {
                "vmId": vm.id,
                "status": status.value,
                "previous": previous.value if previous else None,
                "reason": vm.status_reason,
            },
            vm_id=vm.id,
            owner_id=vm.owner_id,
        )

    def _on_process_exit(self, vm_id: str, clean: bool, reason: str) -> None:
        if vm_id in self._expecting_exit:
            return  # the stop/restart/delete that asked for it records the outcome
        self._spawn(self._record_exit(vm_id, clean, reason))

    async def _record_exit(self, vm_id: str, clean: bool, reason: str) -> None:
        async with self._lock(vm_id):
            vm = await self._load(vm_id)
            if vm is None or vm.status in {S.STOPPED, S.ERROR, S.DELETING}:
                return
            if self.driver.is_running(vm_id):
                return  # a late report: the VM was started again since that process ended
            values = {"pid": None, "ssh_port": None, "started_at": None}
            if clean:
                await self._set_status(vm_id, S.STOPPED, "the guest powered itself off", **values)
            else:
                log.warning("VM %s: %s", vm_id, reason)
                await self._set_status(vm_id, S.ERROR, reason, **values)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- start-up reconciliation ---------------------------------------------------------------
    async def reconcile(self) -> None:
        """Match database rows, run directories and live processes after a (re)start."""
        async with self.db.session() as s:
            vms = await VMRepository(s).all()
        known = {vm.id for vm in vms}
        for vm in vms:
            try:
                await self._reconcile_one(vm)
            except VoidVMError as exc:
                await self._set_status(vm.id, S.ERROR, f"could not re-attach: {exc.message}")
        for orphan in set(self.driver.known_run_dirs()) - known:
            log.warning("Run directory %s belongs to no VM; leaving it untouched", orphan)

    async def _reconcile_one(self, vm: VM) -> None:
        pid = await self.driver.attach(vm.id)
        if vm.status is S.DELETING:
            if pid is not None:
                await self.driver.kill(vm.id)
            await self._remove(vm)
            return
        if pid is not None:
            qemu = await self.driver.query_status(vm.id)
            status = S.PAUSED if qemu == "paused" else S.RUNNING
            if vm.status is not status or vm.pid != pid:
                await self._set_status(vm.id, status, pid=pid, started_at=vm.started_at or now())
            log.info("Re-attached to VM %s (pid %d)", vm.id, pid)
            return
        if vm.status in {S.RUNNING, S.PAUSED, S.STARTING, S.STOPPING, S.REBOOTING}:
            reason = "the QEMU process ended while the server was down"
            if vm.status is S.STOPPING:
                await self._set_status(vm.id, S.STOPPED, pid=None, ssh_port=None)
            else:
                await self._set_status(vm.id, S.ERROR, reason, pid=None, ssh_port=None)
        elif vm.status is S.CREATING:
            image = await self.images.get(vm.image_id)
            if image.status is ImageStatus.DOWNLOADING:
                await self._set_status(vm.id, S.ERROR, "the image download was interrupted")
            elif (self.driver.run_dir(vm.id) / "disk.qcow2").exists():
                await self._set_status(vm.id, S.STOPPED)
            else:
                await self._set_status(vm.id, S.ERROR, "creation was interrupted; delete and retry")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class _Work:
    """An action in two steps: `begin` records the intent, `run` does the work."""

    begin: Callable[[], Awaitable[VM]]
    run: Callable[[], Awaitable[VM]]
