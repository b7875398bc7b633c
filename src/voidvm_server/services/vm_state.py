"""VMStateStore: a VM's status, read and changed in one place.

Every status change is a compare-and-set checked against the transition table (`domain/states.py`).
Its `vm-status` event, and the `system-event` that says what happened (services/system_events.py),
are written in the same transaction and delivered once it has committed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.domain.models import GUEST_IP, VM, VMStatus
from voidvm_server.domain.states import check_move
from voidvm_server.errors import ConcurrentChangeError, vm_not_found
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import VMRepository
from voidvm_server.services.clock import now
from voidvm_server.services.event_log import EventLog
from voidvm_server.services.system_events import lifecycle_event


class VMStateStore:
    def __init__(self, db: Database, events: EventLog) -> None:
        self.db = db
        self.events = events

    async def load(self, vm_id: str) -> VM | None:
        async with self.db.reading() as s:
            return await VMRepository(s).get(vm_id)

    async def reload(self, vm_id: str) -> VM:
        vm = await self.load(vm_id)
        if vm is None:
            raise vm_not_found(vm_id)
        return vm

    async def set(
        self,
        vm_id: str,
        status: VMStatus,
        reason: str | None = None,
        *,
        expected: VMStatus | None = None,
        **values: Any,
    ) -> VM:
        """Move the VM to `status`, compare-and-set: from `expected` when given (an action's intent,
        from the status it was checked against), else from the status read here. An illegal move
        raises IllegalTransitionError; a status changed by another writer ConcurrentChangeError."""
        # Only VM fields named like their columns (pid, ssh_port, started_at) pass through `values`,
        # so the new record is the old one with the changes: one read, one write.
        changes = {"status_reason": reason, "updated_at": now(), **values}
        async with self.events.session() as s:
            repo = VMRepository(s)
            before = await repo.get(vm_id)
            if before is None:
                raise vm_not_found(vm_id)
            if expected is not None and before.status is not expected:
                raise ConcurrentChangeError(before.status.value)
            check_move(before.status, status)
            if not await repo.change_status(vm_id, before.status, status=status.value, **changes):
                current = await repo.get(vm_id)
                if current is None:
                    raise vm_not_found(vm_id)
                raise ConcurrentChangeError(current.status.value)
            vm = dataclasses.replace(before, status=status, **changes)
            await self.tell(s, vm, status, before.status)
        return vm

    async def tell(self, s: AsyncSession, vm: VM, status: VMStatus, previous: VMStatus | None) -> None:
        """Write the events of a change in the caller's unit of work (one of `events.session()`:
        a create, an update, a status change); they are delivered once it has committed."""
        data = {
            "vmId": vm.id,
            "status": status.value,
            "previous": previous.value if previous else None,
            "reason": vm.status_reason,
            "cpu": vm.cpu,
            "memory": vm.memory_mb,
            "network": {"ip": GUEST_IP if vm.pid else None, "ports": vm.ports},
        }
        await self._with_lifecycle(s, vm, data)

    async def tell_deleted(self, s: AsyncSession, vm: VM, previous: VMStatus | None) -> None:
        data = {"vmId": vm.id, "status": "deleted", "previous": previous.value if previous else None}
        await self._with_lifecycle(s, vm, data)

    async def _with_lifecycle(self, s: AsyncSession, vm: VM, data: dict[str, Any]) -> None:
        await self.events.add(s, "vm-status", data, vm_id=vm.id, owner_id=vm.owner_id)
        lifecycle = lifecycle_event(data, vm_id=vm.id, owner_id=vm.owner_id)
        if lifecycle is not None:
            await self.events.add(s, "system-event", lifecycle, vm_id=vm.id, owner_id=vm.owner_id)
