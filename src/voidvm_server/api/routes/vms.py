"""/vms: the virtual machine resource and its actions."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from voidvm_server.api.deps import ContainerDep, CurrentPrincipal
from voidvm_server.api.envelope import ok
from voidvm_server.api.presenters import operation_json, pagination, stats_json, vm_json
from voidvm_server.api.response_models import (
    ERROR_RESPONSES,
    AcceptedEnvelope,
    ConsoleLog,
    ConsoleTicket,
    DeletedVM,
    Envelope,
    VMList,
    VMLiveStatus,
    VMMetrics,
    VMPublic,
)
from voidvm_server.api.routes.operations import operation_location
from voidvm_server.api.schemas import Body, VMActionBody, VMCreateBody, VMUpdateBody
from voidvm_server.services.clock import now
from voidvm_server.services.vms import VMCreate, VMQuery, VMUpdate

router = APIRouter(prefix="/vms", tags=["vms"], responses=ERROR_RESPONSES)
Action = Literal["start", "stop", "restart", "pause", "resume", "reset"]
DONE = {
    "start": "VM started",
    "stop": "VM stopped",
    "restart": "VM restarted",
    "pause": "VM paused",
    "resume": "VM resumed",
    "reset": "VM reset",
}


@router.get("", responses={200: {"model": Envelope[VMList]}})
async def list_vms(
    principal: CurrentPrincipal,
    container: ContainerDep,
    page: int = Query(1, ge=1, le=1_000_000),
    limit: int = Query(20, ge=1, le=100),
    status: str | None = Query(None, max_length=200, description="comma-separated statuses"),
    search: str | None = Query(None, max_length=100),
    sort: str = Query("-created_at", max_length=100, description="e.g. name or -created_at"),
    owner: str | None = Query(None, max_length=64, description="admins: a user id or username"),
) -> JSONResponse:
    query = VMQuery(
        page=page,
        limit=limit,
        status=[s for s in (status or "").split(",") if s],
        search=search or None,
        sort=sort,
        owner=owner,
    )
    vms, total = await container.vms.list(principal, query)
    return ok({"vms": [vm_json(v) for v in vms], "pagination": pagination(page, limit, total)})


@router.post("", status_code=201, responses={201: {"model": Envelope[VMPublic]}})
async def create_vm(body: VMCreateBody, principal: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    spec = VMCreate(
        name=body.name,
        cpu=body.cpu,
        memory=body.memory,
        disk=body.disk,
        os=body.os,
        description=body.description,
        auto_start=body.auto_start,
    )
    vm = await container.vms.create(principal, spec)
    return ok(vm_json(vm), "Virtual machine created", 201)


@router.get("/{vm_id}", responses={200: {"model": Envelope[VMPublic]}})
async def get_vm(vm_id: str, principal: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    return ok(vm_json(await container.vms.get(principal, vm_id)))


@router.put("/{vm_id}", responses={200: {"model": Envelope[VMPublic]}})
@router.patch("/{vm_id}", responses={200: {"model": Envelope[VMPublic]}})
async def update_vm(
    vm_id: str, body: VMUpdateBody, principal: CurrentPrincipal, container: ContainerDep
) -> JSONResponse:
    changes = VMUpdate(**body.model_dump())
    vm = await container.vms.update(principal, vm_id, changes)
    return ok(vm_json(vm), "Virtual machine updated")


@router.delete("/{vm_id}", responses={200: {"model": Envelope[DeletedVM]}})
async def delete_vm(
    vm_id: str,
    principal: CurrentPrincipal,
    container: ContainerDep,
    force: bool = Query(False, description="stop a running VM first"),
) -> JSONResponse:
    await container.vms.delete(principal, vm_id, force=force)
    return ok({"id": vm_id}, "Virtual machine deleted")


async def _action(
    action: Action,
    vm_id: str,
    body: VMActionBody | None,
    principal: CurrentPrincipal,
    container: ContainerDep,
) -> JSONResponse:
    options = body or VMActionBody()
    operation = None
    if options.wait:
        vm = await container.vms.action(
            principal, vm_id, action, force=options.force, timeout=options.timeout
        )
    else:
        vm, operation = await container.vms.submit(
            principal, vm_id, action, force=options.force, timeout=options.timeout
        )
    if operation is not None:
        answer = ok(vm_json(vm), f"{action} accepted", 202, operation=operation_json(operation))
        answer.headers.update(operation_location(operation))
        return answer
    return ok(vm_json(vm), DONE[action])


def _register(action: Action) -> None:
    async def endpoint(
        vm_id: str,
        principal: CurrentPrincipal,
        container: ContainerDep,
        body: VMActionBody | None = None,
    ) -> JSONResponse:
        return await _action(action, vm_id, body, principal, container)

    endpoint.__name__ = f"{action}_vm"
    router.add_api_route(
        f"/{{vm_id}}/{action}",
        endpoint,
        methods=["POST"],
        summary=f"{action.capitalize()} a VM",
        responses={
            200: {"model": Envelope[VMPublic], "description": "The target state was reached"},
            202: {
                "model": AcceptedEnvelope[VMPublic],
                "description": "Accepted (`wait: false`): the VM as the action left it under way, and "
                "the operation finishing it (`Location: /api/v1/operations/{id}`)",
            },
        },
    )


for _name in DONE:
    _register(_name)  # type: ignore[arg-type]


@router.get("/{vm_id}/status", responses={200: {"model": Envelope[VMLiveStatus]}})
async def vm_status(vm_id: str, principal: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    return ok(await container.vms.live_status(principal, vm_id))


@router.get("/{vm_id}/metrics", responses={200: {"model": Envelope[VMMetrics]}})
async def vm_metrics(vm_id: str, principal: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    vm, stats, allocated = await container.vms.stats(principal, vm_id)
    return ok(stats_json(vm, stats, allocated, now()))


@router.get("/{vm_id}/console/log", responses={200: {"model": Envelope[ConsoleLog]}})
async def console_log(
    vm_id: str,
    principal: CurrentPrincipal,
    container: ContainerDep,
    tail: int = Query(65536, ge=1, le=4 * 1024 * 1024, description="bytes from the end"),
) -> JSONResponse:
    vm = await container.vms.get(principal, vm_id)
    data, size = await container.consoles.saved_output(vm.id, tail)
    return ok({"log": data.decode("utf-8", errors="replace"), "size": size,
               "truncated": size > len(data)})  # fmt: skip


class ConsoleTicketBody(Body):
    type: Literal["serial", "vnc"] = "serial"


@router.post("/{vm_id}/console", status_code=201, responses={201: {"model": Envelope[ConsoleTicket]}})
async def console_ticket(
    vm_id: str,
    request: Request,
    principal: CurrentPrincipal,
    container: ContainerDep,
    body: ConsoleTicketBody | None = None,
) -> JSONResponse:
    """A single-use ticket (~30 s) for the raw serial (`/console`) or VNC (`/vnc`) WebSocket."""
    kind = (body or ConsoleTicketBody()).type
    vm = await container.vms.get_running(principal, vm_id)
    ticket = await container.tickets.issue(principal.grant, vm.id, kind)
    await container.audit.record("vm.console", user=principal.user, target_type="vm", target_id=vm.id,
                                 message=f"{kind} ticket issued")  # fmt: skip
    scheme = "wss" if request.url.scheme == "https" else "ws"
    base = str(request.base_url.replace(scheme=scheme)).rstrip("/")
    stream = "console" if kind == "serial" else "vnc"
    url = f"{base}/api/v1/vms/{vm.id}/{stream}?ticket={ticket}"
    data = {"ticket": ticket, "url": url, "expires_in": int(container.tickets.ttl), "type": kind}
    return ok(data, "Console ticket issued", 201)
