"""The WebSocket endpoints: `/ws` (JSON events, control, terminals) and the raw streams
`/api/v1/vms/{id}/console` (serial bytes) and `/api/v1/vms/{id}/vnc` (RFB)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from voidvm_server.api.container import Container
from voidvm_server.api.ws.connection import EventSocket
from voidvm_server.api.ws.guards import bearer, check_origin, int_param, refuse_origin
from voidvm_server.api.ws.raw import RawConsole, RawStream, VncProxy

router = APIRouter()
RAW_PREFIX = "/api/v1/vms"


def _container(websocket: WebSocket) -> Container:
    container: Container = websocket.app.state.container
    return container


@router.websocket("/ws")
async def events_socket(websocket: WebSocket) -> None:
    container = _container(websocket)
    if not check_origin(websocket, container.host_policy, container.settings.ws_allowed_origins):
        await refuse_origin(websocket)
        return
    socket = EventSocket(
        websocket, container, token=bearer(websocket), resume_from=int_param(websocket, "lastEventId")
    )
    await socket.run()


async def _raw(websocket: WebSocket, stream: type[RawStream], vm_id: str) -> None:
    container = _container(websocket)
    if not check_origin(websocket, container.host_policy, container.settings.ws_allowed_origins):
        await refuse_origin(websocket)
        return
    await stream(websocket, container, vm_id).run()


@router.websocket(RAW_PREFIX + "/{vm_id}/console")
async def console_stream(websocket: WebSocket, vm_id: str) -> None:
    await _raw(websocket, RawConsole, vm_id)


@router.websocket(RAW_PREFIX + "/{vm_id}/vnc")
async def vnc_stream(websocket: WebSocket, vm_id: str) -> None:
    await _raw(websocket, VncProxy, vm_id)
