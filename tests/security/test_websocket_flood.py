"""An anonymous WebSocket flood: reconnect loops that never authenticate must not take the place of
a signed-in user's sockets (a real uvicorn on 127.0.0.1; every loop is bounded in count and time)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import fake_driver_factory
from tests.ws.conftest import TIMEOUT, WsServer, serve, ws_settings
from voidvm_server.api.ws.hub import ConnectionHub
from voidvm_server.events.bus import EventBus

FLOOD_SECONDS = 3.0


async def _anonymous_loop(server: WsServer, stop: asyncio.Event, outcomes: Counter[str]) -> None:
    """Connect without credentials, hold the socket until the server closes it, reconnect."""
    for _ in range(200):  # bounded even if the server never refused anything
        if stop.is_set():
            return
        try:
            async with connect(server.ws_base + "/ws", open_timeout=TIMEOUT) as socket:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FLOOD_SECONDS * 2):
                        await socket.recv()
                outcomes["held"] += 1
        except ConnectionClosed as exc:
            outcomes[str(exc.rcvd.code if exc.rcvd else None)] += 1
        except OSError:
            outcomes["refused-tcp"] += 1


async def _ping(socket: ClientConnection) -> str:
    await socket.send(json.dumps({"type": "ping", "data": {}, "id": "p"}))
    async with asyncio.timeout(TIMEOUT):
        return str(json.loads(await socket.recv())["type"])


async def test_an_anonymous_flood_does_not_lock_out_a_real_user(tmp_path: Path) -> None:
    settings = ws_settings(
        tmp_path, ws_max_total=30, ws_max_anonymous=25, ws_max_anonymous_per_client=10,
        ws_auth_grace_seconds=FLOOD_SECONDS * 2,
    )  # fmt: skip
    async with serve(settings, fake_driver_factory, None) as server:
        token = await server.login()
        hub = server.container.ws_hub
        stop, outcomes = asyncio.Event(), Counter[str]()
        loops = [asyncio.create_task(_anonymous_loop(server, stop, outcomes)) for _ in range(40)]
        try:
            async with asyncio.timeout(TIMEOUT):
                while hub.anonymous < 10:  # noqa: ASYNC110 - the flood has filled this address's share
                    await asyncio.sleep(0.01)
            assert hub.anonymous == 10  # never more than the per-address cap
            async with AsyncExitStack() as stack:
                sockets = [
                    await stack.enter_async_context(
                        connect(f"{server.ws_base}/ws?token={token}", open_timeout=TIMEOUT)
                    )
                    for _ in range(10)
                ]
                assert [await _ping(s) for s in sockets] == ["pong"] * 10
                assert hub.anonymous <= 10
        finally:
            stop.set()
            await asyncio.sleep(0)
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        assert outcomes["1013"] > 0  # the flood was refused, not queued


def test_anonymous_sockets_are_capped_per_address_and_in_all() -> None:
    hub = ConnectionHub(
        EventBus(), _never, max_per_user=10, max_total=5, revalidate_seconds=60,
        max_anonymous=4, max_anonymous_per_client=2,
    )  # fmt: skip
    members = [_Socket() for _ in range(6)]
    admitted = [hub.admit_anonymous(m, f"10.0.0.{i // 2}") for i, m in enumerate(members)]  # type: ignore[arg-type]
    assert admitted == [True, True, True, True, False, False]  # 2 per address, 4 in all
    assert not hub.admit_anonymous(_Socket(), "10.0.0.0")  # type: ignore[arg-type]
    hub.leave(members[0])  # type: ignore[arg-type]
    assert hub.anonymous == 3
    assert hub.admit_anonymous(members[4], "10.0.0.0")  # type: ignore[arg-type]


class _Socket:
    """A hashable stand-in for a socket: the hub keys its pools by socket."""

    principal = None
    credential = None


async def _never(token: str) -> Any:
    raise AssertionError("not called")
