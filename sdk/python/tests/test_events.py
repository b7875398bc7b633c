"""Live events against a tiny local WebSocket server: subscribe, reconnect, resume."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from voidvm import (
    AsyncVoidVMClient,
    AuthenticationError,
    NotFoundError,
    Operation,
    RateLimitError,
    SocketClosedError,
    Topics,
)
from voidvm._ws import ws_url
from voidvm_testkit import (
    WsRecorder,
    bounded,
    operation,
    recv_json,
    send_json,
    ws_client,
    ws_server,
)


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://localhost:3000/api/v1", "ws://localhost:3000/ws?token=t%2B1"),
        ("https://vm.example.org/api/v1/", "wss://vm.example.org/ws?token=t%2B1"),
        ("https://example.org/voidvm/api/v1", "wss://example.org/voidvm/ws?token=t%2B1"),
        ("http://127.0.0.1:3000", "ws://127.0.0.1:3000/ws?token=t%2B1"),
    ],
)
def test_ws_url_is_derived_from_the_base_url(base_url: str, expected: str) -> None:
    assert ws_url(base_url, "t+1") == expected


def test_topics_normalize_names_and_dicts() -> None:
    from voidvm._events import normalize_topics

    assert normalize_topics(["vm-status-all", Topics.vm_metrics("vm-1", interval=5)]) == [
        {"topic": "vm-status-all"},
        {"topic": "vm-metrics", "vmId": "vm-1", "interval": 5},
    ]
    assert Topics.system_monitor() == {"topic": "system-monitor"}
    with pytest.raises(ValueError):
        normalize_topics([])
    with pytest.raises(ValueError):
        normalize_topics([{"vmId": "x"}])


def status_event(event_id: int, status: str) -> dict[str, Any]:
    return {"vmId": "vm-1", "status": status, "eventId": event_id}


async def test_events_subscribe_with_the_token_and_yield_server_messages() -> None:
    async def handler(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        await recv_json(ws, rec)
        await send_json(ws, "pong", {})
        await send_json(ws, "vm-status", status_event(1, "starting"))
        await send_json(ws, "vm-status", status_event(2, "running"))
        await ws.wait_closed()

    async with ws_server(handler) as (base_url, rec):
        client = AsyncVoidVMClient(base_url=base_url, token="secret-token")
        topics = [Topics.vm_status("vm-1"), "system-monitor"]
        async with client, client.events(topics) as stream:
            first = await bounded(anext(stream))
            second = await bounded(anext(stream))

    assert rec.paths == ["/ws?token=secret-token"]
    assert [m["type"] for m in rec.received] == ["subscribe", "subscribe"]
    assert rec.received[0]["data"] == {"topic": "vm-status", "vmId": "vm-1"}
    assert rec.received[1]["data"] == {"topic": "system-monitor"}
    assert (first.type, first.data.status, first.event_id, first.vm_id) == (
        "vm-status",
        "starting",
        1,
        "vm-1",
    )
    assert second.data["status"] == "running"
    assert stream.last_event_id == 2


async def test_operations_topic_yields_operation_events() -> None:
    async def handler(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        await send_json(ws, "subscribed", {"topic": "operations", "lastEventId": 6})
        pull = operation("op-00000000000e", type="image.pull", progress=42)
        await send_json(ws, "operation", {**pull, "eventId": 7})
        await ws.wait_closed()

    async with ws_client(handler) as (client, rec), client.events([Topics.operations()]) as stream:
        subscribed = await bounded(anext(stream))
        changed = await bounded(anext(stream))

    assert rec.received[0]["data"] == {"topic": "operations"}
    assert subscribed.operation is None
    assert changed.type == "operation" and changed.event_id == 7
    assert isinstance(changed.operation, Operation)
    assert changed.operation.progress == 42 and not changed.operation.finished
    assert "eventId" not in changed.operation and changed.operation.type == "image.pull"


async def test_events_reconnect_and_resume_from_the_last_event_id() -> None:
    async def first_connection(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        await send_json(ws, "vm-status", status_event(1, "starting"))
        await send_json(ws, "vm-status", status_event(2, "running"))
        await ws.close(code=1012, reason="service restart")

    async def second_connection(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        await send_json(ws, "vm-status", status_event(2, "running"))  # replayed duplicate
        await send_json(ws, "vm-status", status_event(3, "stopping"))
        await ws.wait_closed()

    async with ws_server([first_connection, second_connection]) as (base_url, rec):
        client = AsyncVoidVMClient(base_url=base_url, token="t")
        stream = client.events(["vm-status-all"], reconnect_delay=0.01)
        seen: list[int | None] = []
        async with client:
            async for event in stream:
                seen.append(event.event_id)
                if len(seen) == 3:
                    break
            await stream.aclose()

    assert seen == [1, 2, 3]
    assert rec.connections == 2
    assert stream.reconnects == 1
    assert rec.received[0]["data"] == {"topic": "vm-status-all"}
    assert rec.received[1]["data"] == {"topic": "vm-status-all", "lastEventId": 2}
    assert stream.state == "closed"


async def test_events_give_up_after_max_reconnects() -> None:
    async def drop(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        await ws.close(code=1011, reason="boom")

    async with ws_server(drop) as (base_url, rec):
        client = AsyncVoidVMClient(base_url=base_url, token="t")
        async with client:
            stream = client.events(["vm-status-all"], max_reconnects=2, reconnect_delay=0.001)
            with pytest.raises(SocketClosedError) as caught:
                await bounded(anext(stream))
    assert rec.connections == 3
    assert caught.value.close_code == 1011


async def test_error_message_is_raised_as_the_mapped_exception() -> None:
    async def handler(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        await send_json(ws, "error", {"code": "VM_NOT_FOUND", "message": "no vm-9", "vmId": "vm-9"})
        await ws.wait_closed()

    async with ws_client(handler) as (client, _):
        stream = client.events([Topics.vm_status("vm-9")])
        with pytest.raises(NotFoundError) as caught:
            await bounded(anext(stream))
    assert caught.value.code == "VM_NOT_FOUND"
    assert stream.state == "closed"


async def test_policy_close_is_not_retried() -> None:
    async def reject(ws: ServerConnection, rec: WsRecorder) -> None:
        await ws.close(code=4401, reason="invalid token")

    async with ws_client(reject, token="bad") as (client, rec):
        with pytest.raises(AuthenticationError):
            await bounded(anext(client.events(["vm-status-all"], reconnect_delay=0.001)))
    assert rec.connections == 1


async def test_unreachable_server_is_a_transport_error_when_not_reconnecting() -> None:
    async with ws_server(lambda ws, rec: ws.wait_closed()) as (base_url, _):
        pass  # the port is closed again now
    async with AsyncVoidVMClient(base_url=base_url, token="s3cret") as client:
        with pytest.raises(SocketClosedError) as caught:
            await bounded(anext(client.events(["vm-status-all"], reconnect=False)))
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "INVALID_TOKEN", AuthenticationError),
        (429, "RATE_LIMIT_EXCEEDED", RateLimitError),
    ],
)
async def test_refused_handshake_maps_the_envelope(
    status: int, code: str, expected: type[Exception]
) -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        body = json.dumps({"success": False, "error": {"code": code, "message": "refused"}})
        response = connection.respond(status, body)
        response.headers["Retry-After"] = "3"
        return response

    async with (
        ws_server(lambda ws, rec: ws.wait_closed(), process_request=refuse) as (url, rec),
        AsyncVoidVMClient(base_url=url, token="t") as client,
    ):
        with pytest.raises(expected) as caught:
            await bounded(anext(client.events(["vm-status-all"])))
    assert getattr(caught.value, "code", None) == code
    assert getattr(caught.value, "status", None) == status
    assert rec.connections == 0
    if isinstance(caught.value, RateLimitError):
        assert caught.value.retry_after == 3.0
