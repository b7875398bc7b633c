"""/operations: long work (image pulls and imports, `wait: false` actions) to read, wait on, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from voidvm_server.api.deps import ContainerDep, CurrentPrincipal
from voidvm_server.api.envelope import ok
from voidvm_server.api.presenters import operation_json, pagination
from voidvm_server.api.response_models import ERROR_RESPONSES, Envelope, OperationList, OperationPublic
from voidvm_server.domain.operations import Operation
from voidvm_server.services.operations import MAX_WAIT_SECONDS

router = APIRouter(prefix="/operations", tags=["operations"], responses=ERROR_RESPONSES)
OPERATIONS_PATH = "/api/v1/operations"


def operation_location(op: Operation) -> dict[str, str]:
    """The `Location` header of a 202 answer."""
    return {"Location": f"{OPERATIONS_PATH}/{op.id}"}


@router.get("", responses={200: {"model": Envelope[OperationList]}})
async def list_operations(
    principal: CurrentPrincipal,
    container: ContainerDep,
    page: int = Query(1, ge=1, le=1_000_000),
    limit: int = Query(20, ge=1, le=100),
    status: str | None = Query(None, max_length=16, description="e.g. running"),
    type: str | None = Query(None, max_length=32, description="e.g. vm.start or image.pull"),
    resource_id: str | None = Query(None, max_length=64, description="a VM or image id"),
) -> JSONResponse:
    """Your operations, newest first (admins: everyone's)."""
    found, total = await container.operations.list(
        principal, status=status, type=type, resource_id=resource_id, page=page, limit=limit
    )
    listed = [operation_json(op) for op in found]
    return ok({"operations": listed, "pagination": pagination(page, limit, total)})


@router.get("/{operation_id}", responses={200: {"model": Envelope[OperationPublic]}})
async def get_operation(
    operation_id: str, principal: CurrentPrincipal, container: ContainerDep
) -> JSONResponse:
    return ok(operation_json(await container.operations.get(principal, operation_id)))


@router.get("/{operation_id}/wait", responses={200: {"model": Envelope[OperationPublic]}})
async def wait_for_operation(
    operation_id: str,
    principal: CurrentPrincipal,
    container: ContainerDep,
    timeout: float = Query(30, ge=0, le=MAX_WAIT_SECONDS, description="seconds, at most 60"),
) -> JSONResponse:
    """The operation as soon as it has finished, or as it stands after `timeout` seconds."""
    op = await container.operations.wait(principal, operation_id, timeout)
    return ok(operation_json(op), "Operation finished" if op.finished else "Operation still running")


@router.delete("/{operation_id}", responses={200: {"model": Envelope[OperationPublic]}})
async def cancel_operation(
    operation_id: str, principal: CurrentPrincipal, container: ContainerDep
) -> JSONResponse:
    """Cancel a running operation that can be (409 NOT_CANCELLABLE otherwise)."""
    op = await container.operations.cancel(principal, operation_id)
    await container.audit.record("operation.cancel", user=principal.user, target_type="operation",
                                 target_id=op.id)  # fmt: skip
    return ok(operation_json(op), "Operation cancelled")
