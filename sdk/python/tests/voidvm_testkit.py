"""Fakes for the SDK tests: a scripted HTTP API behind ``httpx.MockTransport`` and a tiny
local WebSocket server. No VoidVM server is needed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.server import ServerConnection, serve

from voidvm import AsyncVoidVMClient

TIMESTAMP = "2024-01-01T12:00:00Z"


def ok(data: Any = None, status: int = 200, **headers: str) -> httpx.Response:
    body = {"success": True, "data": data, "message": "OK", "timestamp": TIMESTAMP}
    return httpx.Response(status, json=body, headers={"X-Request-ID": "req-ok", **headers})


def fail(
    status: int,
    code: str,
    message: str = "failed",
    details: Any = None,
    **headers: str,
) -> httpx.Response:
    body = {
        "success": False,
        "error": {"code": code, "message": message, "details": details},
        "timestamp": TIMESTAMP,
    }
    return httpx.Response(status, json=body, headers={"X-Request-ID": "req-err", **headers})


def vm(vm_id: str = "vm-001", status: str = "stopped", **fields: Any) -> dict[str, Any]:
    base = {
        "id": vm_id,
        "name": f"name-{vm_id}",
        "description": None,
        "status": status,
        "cpu": 2,
        "memory": 2048,
        "disk": 20,
        "os": "tiny",
        "image": "img-tiny",
        "owner": "usr-admin",
        "ip": None,
        "ports": {"ssh": 22001},
        "status_reason": None,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "started_at": None,
    }
    base.update(fields)
    return base


def operation(
    operation_id: str = "op-00000000000a",
    status: str = "running",
    type: str = "vm.start",
    resource_id: str = "vm-001",
    **fields: Any,
) -> dict[str, Any]:
    """An operation as the server shows it (``GET /operations/{id}``)."""
    finished = status in ("succeeded", "failed", "cancelled")
    base = {
        "id": operation_id,
        "type": type,
        "status": status,
        "progress": 100 if status == "succeeded" else None,
        "message": "",
        "resource_type": "image" if type.startswith("image.") else "vm",
        "resource_id": resource_id,
        "owner": "usr-admin",
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "finished_at": TIMESTAMP if finished else None,
        "error": None,
        "result": None,
        "cancellable": type.startswith("image.") and not finished,
    }
    base.update(fields)
    return base


def accepted(data: Any, operation: dict[str, Any]) -> httpx.Response:
    """A 202 answer: ``data`` and the ``operation`` doing the work (also in ``Location``)."""
    body = {
        "success": True,
        "data": data,
        "message": "accepted",
        "operation": operation,
        "timestamp": TIMESTAMP,
    }
    location = f"/api/v1/operations/{operation['id']}"
    return httpx.Response(202, json=body, headers={"X-Request-ID": "req-ok", "Location": location})


Responder = httpx.Response | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeAPI:
    """Routes ``(METHOD, path)`` to scripted responses and records every request.

    A route given a list of responses answers them in order (the last one repeats).
    """

    base_path: str = "/api/v1"
    routes: dict[tuple[str, str], list[Responder]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(self, method: str, path: str, *responses: Responder) -> FakeAPI:
        self.routes[(method.upper(), path)] = list(responses)
        return self

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.startswith(self.base_path):
            path = path[len(self.base_path) :]
        queue = self.routes.get((request.method, path))
        if not queue:
            return fail(404, "NOT_FOUND", f"no fake route {request.method} {path}")
        responder = queue.pop(0) if len(queue) > 1 else queue[0]
        return responder(request) if callable(responder) else responder

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def json_body(request: httpx.Request) -> Any:
    return json.loads(request.content)


@dataclass
class WsRecorder:
    """What the fake WebSocket server saw."""

    paths: list[str] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0


WsHandler = Callable[[ServerConnection, WsRecorder], Awaitable[None]]


async def recv_json(ws: ServerConnection, recorder: WsRecorder) -> dict[str, Any]:
    message = json.loads(await ws.recv())
    recorder.received.append(message)
    assert isinstance(message, dict)
    return message


async def send_json(
    ws: ServerConnection, type: str, data: dict[str, Any], id: str | None = None
) -> None:
    await ws.send(json.dumps({"type": type, "data": data, "id": id, "timestamp": TIMESTAMP}))


@contextlib.asynccontextmanager
async def ws_server(
    handlers: WsHandler | Iterable[WsHandler],
    process_request: Any = None,
) -> AsyncIterator[tuple[str, WsRecorder]]:
    """Serve on 127.0.0.1 (a free port); yields ``(api_base_url, recorder)``. With several
    handlers, connection N is served by handler N (the last one repeats)."""
    recorder = WsRecorder()
    queue = [handlers] if callable(handlers) else list(handlers)

    async def handle(ws: ServerConnection) -> None:
        assert ws.request is not None
        recorder.paths.append(ws.request.path)
        index = min(recorder.connections, len(queue) - 1)
        recorder.connections += 1
        await queue[index](ws, recorder)

    async with serve(handle, "127.0.0.1", 0, process_request=process_request) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}/api/v1", recorder


async def bounded(awaitable: Awaitable[Any], seconds: float = 5.0) -> Any:
    """Every socket test is bounded in time."""
    async with asyncio.timeout(seconds):
        return await awaitable


@contextlib.asynccontextmanager
async def ws_client(
    handlers: WsHandler | Iterable[WsHandler], token: str = "t"
) -> AsyncIterator[tuple[AsyncVoidVMClient, WsRecorder]]:
    """A client connected to a fresh :func:`ws_server`; both closed on exit."""
    async with (
        ws_server(handlers) as (base_url, recorder),
        AsyncVoidVMClient(base_url=base_url, token=token) as client,
    ):
        yield client, recorder
