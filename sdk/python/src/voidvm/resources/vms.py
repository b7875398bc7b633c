"""``/vms``: virtual machines. Request building is shared; the classes only send."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Literal

from .._http import Call
from .._models import VM, ConsoleLog, Page, Record, VMMetrics, VMStatus
from ._base import AsyncResource, SyncResource, body, path
from ._paging import PAGE_SIZE, has_more, page_parser
from ._waiting import StatusWait
from .operations import with_operation

__all__ = ["AsyncVMs", "VMAction", "VMs"]

VMAction = Literal["start", "stop", "restart", "pause", "resume", "reset"]

#: Extra seconds the HTTP timeout allows beyond a server-side action timeout.
_ACTION_GRACE = 30.0
#: The server's default ACPI power-off timeout for stop/restart.
_DEFAULT_STOP_TIMEOUT = 30.0


def _list_call(
    page: int,
    limit: int,
    status: str | None,
    search: str | None,
    sort: str | None,
    owner: str | None,
) -> Call[Page[VM]]:
    params = {
        "page": page,
        "limit": limit,
        "status": status,
        "search": search,
        "sort": sort,
        "owner": owner,
    }
    return Call("GET", "/vms", page_parser("vms", VM.from_json), params=params)


def _create_call(spec: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> Call[VM]:
    return Call("POST", "/vms", VM.from_json, json=body(spec, fields))


def _update_call(
    vm_id: str, changes: Mapping[str, Any] | None, fields: Mapping[str, Any]
) -> Call[VM]:
    return Call("PATCH", path("vms", vm_id), VM.from_json, json=body(changes, fields))


def _delete_call(vm_id: str, force: bool) -> Call[None]:
    return Call("DELETE", path("vms", vm_id), lambda _: None, params={"force": force or None})


def _action_call(
    vm_id: str,
    action: VMAction,
    *,
    wait: bool,
    force: bool | None = None,
    timeout: float | None = None,
) -> Call[VM]:
    payload = body({"wait": wait}, {"force": force, "timeout": timeout})
    http_timeout = None
    if wait and action in ("stop", "restart"):
        http_timeout = (timeout or _DEFAULT_STOP_TIMEOUT) + _ACTION_GRACE
    return Call(
        "POST",
        path("vms", vm_id, action),
        with_operation(VM.from_json),
        json=payload,
        timeout=http_timeout,
        envelope=True,
    )


def _metrics_params(
    start: str | None, end: str | None, interval: str | int | None
) -> dict[str, Any]:
    return {"from": start, "to": end, "interval": interval}


class VMs(SyncResource):
    """Virtual machines (blocking)."""

    def list(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        sort: str | None = None,
        owner: str | None = None,
    ) -> builtins.list[VM]:
        """Every VM visible to the caller, fetching as many pages as needed."""
        return [*self.iter(status=status, search=search, sort=sort, owner=owner)]

    def iter(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        sort: str | None = None,
        owner: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[VM]:
        """Yield VMs lazily, one page request at a time."""
        page = 1
        while True:
            result = self.list_page(
                page, page_size, status=status, search=search, sort=sort, owner=owner
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
        search: str | None = None,
        sort: str | None = None,
        owner: str | None = None,
    ) -> Page[VM]:
        """One page of VMs with its pagination."""
        return self._http.send(_list_call(page, limit, status, search, sort, owner))

    def get(self, vm_id: str) -> VM:
        return self._http.send(Call("GET", path("vms", vm_id), VM.from_json))

    def create(
        self,
        spec: Mapping[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        cpu: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        os: str | None = None,
        description: str | None = None,
        auto_start: bool | None = None,
        **extra: Any,
    ) -> VM:
        """Create a VM from a dict (``create({'name': 'my-vm', ...})``), keyword
        arguments, or both (keywords win). Memory is in MB, disk in GB."""
        fields = dict(
            name=name,
            cpu=cpu,
            memory=memory,
            disk=disk,
            os=os,
            description=description,
            auto_start=auto_start,
            **extra,
        )
        return self._http.send(_create_call(spec, fields))

    def update(
        self,
        vm_id: str,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        cpu: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        **extra: Any,
    ) -> VM:
        """Change a VM (hardware changes need it stopped; disk only grows)."""
        fields = dict(
            name=name, description=description, cpu=cpu, memory=memory, disk=disk, **extra
        )
        return self._http.send(_update_call(vm_id, changes, fields))

    def delete(self, vm_id: str, *, force: bool = False) -> None:
        """Delete a stopped VM and its disk; ``force`` stops a running one first."""
        self._http.send(_delete_call(vm_id, force))

    def start(self, vm_id: str, *, wait: bool = True) -> VM:
        """Return the VM once running; with ``wait=False`` at once (202), as the action left
        it (``starting``), with ``vm.operation`` the :class:`Operation` to wait on
        (``client.operations.wait(vm.operation)``). The other actions work alike."""
        return self._http.send(_action_call(vm_id, "start", wait=wait))

    def stop(
        self, vm_id: str, *, force: bool = False, timeout: float | None = None, wait: bool = True
    ) -> VM:
        """ACPI power-off, killed after ``timeout`` seconds (server default 30);
        ``force`` kills at once."""
        return self._http.send(
            _action_call(vm_id, "stop", wait=wait, force=force or None, timeout=timeout)
        )

    def restart(
        self, vm_id: str, *, force: bool = False, timeout: float | None = None, wait: bool = True
    ) -> VM:
        return self._http.send(
            _action_call(vm_id, "restart", wait=wait, force=force or None, timeout=timeout)
        )

    def pause(self, vm_id: str, *, wait: bool = True) -> VM:
        return self._http.send(_action_call(vm_id, "pause", wait=wait))

    def resume(self, vm_id: str, *, wait: bool = True) -> VM:
        return self._http.send(_action_call(vm_id, "resume", wait=wait))

    def reset(self, vm_id: str, *, wait: bool = True) -> VM:
        return self._http.send(_action_call(vm_id, "reset", wait=wait))

    def status(self, vm_id: str) -> VMStatus:
        return self._http.send(Call("GET", path("vms", vm_id, "status"), VMStatus.from_json))

    def metrics(
        self,
        vm_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        interval: str | int | None = None,
    ) -> VMMetrics:
        """Current usage, or history with ``start``/``end``/``interval`` (sent as
        ``from``/``to``/``interval``)."""
        params = _metrics_params(start, end, interval)
        call = Call("GET", path("vms", vm_id, "metrics"), VMMetrics.from_json, params=params)
        return self._http.send(call)

    def console_log(self, vm_id: str, *, tail: int | None = None) -> ConsoleLog:
        """The saved serial output; ``tail`` limits it to the last N bytes."""
        params = {"tail": tail}
        call = Call(
            "GET", path("vms", vm_id, "console", "log"), ConsoleLog.from_json, params=params
        )
        return self._http.send(call)

    def console_ticket(self, vm_id: str, *, type: str = "serial") -> Record:
        """A short-lived ticket for the raw console stream (``{ticket, url, expires_in}``)."""
        call = Call("POST", path("vms", vm_id, "console"), Record.from_json, json={"type": type})
        return self._http.send(call)

    def wait_for(
        self,
        vm_id: str,
        status: str | Iterable[str],
        *,
        timeout: float = 300.0,
        interval: float = 1.0,
        fail_on: Iterable[str] = ("error",),
    ) -> VM:
        """Poll until the VM is in ``status`` (one or several); raise
        :class:`WaitTimeoutError` after ``timeout`` seconds, or :class:`VoidVMError`
        (code ``VM_ERROR``) if it enters a ``fail_on`` status instead."""
        waiter = StatusWait.start(
            vm_id, status, timeout=timeout, interval=interval, fail_on=fail_on
        )
        while True:
            vm = self.get(vm_id)
            if waiter.reached(vm):
                return vm
            time.sleep(waiter.next_sleep(vm.get("status")))


class AsyncVMs(AsyncResource):
    """Virtual machines (asyncio); the same methods as :class:`VMs`, awaitable."""

    async def list(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        sort: str | None = None,
        owner: str | None = None,
    ) -> builtins.list[VM]:
        return [vm async for vm in self.iter(status=status, search=search, sort=sort, owner=owner)]

    async def iter(
        self,
        *,
        status: str | None = None,
        search: str | None = None,
        sort: str | None = None,
        owner: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> AsyncIterator[VM]:
        page = 1
        while True:
            result = await self.list_page(
                page, page_size, status=status, search=search, sort=sort, owner=owner
            )
            for vm in result.items:
                yield vm
            if not has_more(result):
                return
            page += 1

    async def list_page(
        self,
        page: int = 1,
        limit: int = 20,
        *,
        status: str | None = None,
        search: str | None = None,
        sort: str | None = None,
        owner: str | None = None,
    ) -> Page[VM]:
        return await self._http.send(_list_call(page, limit, status, search, sort, owner))

    async def get(self, vm_id: str) -> VM:
        return await self._http.send(Call("GET", path("vms", vm_id), VM.from_json))

    async def create(
        self,
        spec: Mapping[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        cpu: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        os: str | None = None,
        description: str | None = None,
        auto_start: bool | None = None,
        **extra: Any,
    ) -> VM:
        fields = dict(
            name=name,
            cpu=cpu,
            memory=memory,
            disk=disk,
            os=os,
            description=description,
            auto_start=auto_start,
            **extra,
        )
        return await self._http.send(_create_call(spec, fields))

    async def update(
        self,
        vm_id: str,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        cpu: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
        **extra: Any,
    ) -> VM:
        fields = dict(
            name=name, description=description, cpu=cpu, memory=memory, disk=disk, **extra
        )
        return await self._http.send(_update_call(vm_id, changes, fields))

    async def delete(self, vm_id: str, *, force: bool = False) -> None:
        await self._http.send(_delete_call(vm_id, force))

    async def start(self, vm_id: str, *, wait: bool = True) -> VM:
        return await self._http.send(_action_call(vm_id, "start", wait=wait))

    async def stop(
        self,
        vm_id: str,
        *,
        force: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (server-side power-off timeout)
        wait: bool = True,
    ) -> VM:
        return await self._http.send(
            _action_call(vm_id, "stop", wait=wait, force=force or None, timeout=timeout)
        )

    async def restart(
        self,
        vm_id: str,
        *,
        force: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (server-side power-off timeout)
        wait: bool = True,
    ) -> VM:
        return await self._http.send(
            _action_call(vm_id, "restart", wait=wait, force=force or None, timeout=timeout)
        )

    async def pause(self, vm_id: str, *, wait: bool = True) -> VM:
        return await self._http.send(_action_call(vm_id, "pause", wait=wait))

    async def resume(self, vm_id: str, *, wait: bool = True) -> VM:
        return await self._http.send(_action_call(vm_id, "resume", wait=wait))

    async def reset(self, vm_id: str, *, wait: bool = True) -> VM:
        return await self._http.send(_action_call(vm_id, "reset", wait=wait))

    async def status(self, vm_id: str) -> VMStatus:
        return await self._http.send(Call("GET", path("vms", vm_id, "status"), VMStatus.from_json))

    async def metrics(
        self,
        vm_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        interval: str | int | None = None,
    ) -> VMMetrics:
        params = _metrics_params(start, end, interval)
        call = Call("GET", path("vms", vm_id, "metrics"), VMMetrics.from_json, params=params)
        return await self._http.send(call)

    async def console_log(self, vm_id: str, *, tail: int | None = None) -> ConsoleLog:
        params = {"tail": tail}
        call = Call(
            "GET", path("vms", vm_id, "console", "log"), ConsoleLog.from_json, params=params
        )
        return await self._http.send(call)

    async def console_ticket(self, vm_id: str, *, type: str = "serial") -> Record:
        call = Call("POST", path("vms", vm_id, "console"), Record.from_json, json={"type": type})
        return await self._http.send(call)

    async def wait_for(
        self,
        vm_id: str,
        status: str | Iterable[str],
        *,
        timeout: float = 300.0,  # noqa: ASYNC109 (polling deadline)
        interval: float = 1.0,
        fail_on: Iterable[str] = ("error",),
    ) -> VM:
        waiter = StatusWait.start(
            vm_id, status, timeout=timeout, interval=interval, fail_on=fail_on
        )
        while True:
            vm = await self.get(vm_id)
            if waiter.reached(vm):
                return vm
            await asyncio.sleep(waiter.next_sleep(vm.get("status")))
