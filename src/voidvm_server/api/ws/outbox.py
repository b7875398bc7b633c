"""Outbox: a socket's bounded send queue, drained in order by one writer task.

Producers (the event bus, the console, request handlers) never await the network: they `put` and
return. A client that reads so slowly that `limit` items pile up is closed with 1013 ("try again
later"); an event-stream client then reconnects and resumes from its last event id. One that
takes no data at all for `send_timeout` seconds is cut off (see `deadline`).
A `Close` item closes the socket after everything queued before it has been sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from starlette.websockets import WebSocket

from voidvm_server.api.ws import deadline
from voidvm_server.api.ws.protocol import CLOSE_TRY_LATER

T = TypeVar("T")


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


class Outbox(Generic[T]):
    def __init__(
        self,
        websocket: WebSocket,
        render: Callable[[T], Awaitable[str | bytes | None]],
        limit: int = 4096,
        *,
        send_timeout: float,
    ) -> None:
        self.websocket = websocket
        self.render = render
        self.send_timeout = send_timeout
        self._queue: asyncio.Queue[T | Close] = asyncio.Queue(limit)
        self._closing: Close | None = None

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def put(self, item: T) -> None:
        if self._closing is not None:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._overflow()

    def close(self, code: int, reason: str) -> None:
        """Close after what is already queued; later items are dropped."""
        if self._closing is not None:
            return
        self._closing = Close(code, reason[:120])
        try:
            self._queue.put_nowait(self._closing)
        except asyncio.QueueFull:
            self._overflow()

    def _overflow(self) -> None:
        # Make room: everything still queued is dropped; the client resyncs after reconnecting.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._closing = Close(CLOSE_TRY_LATER, "the client is not reading fast enough")
        self._queue.put_nowait(self._closing)

    async def run(self) -> None:
        """Send until a Close item; returns once the socket is closed (by either side). Raises
        `StalledClient` when a send misses its deadline."""
        while True:
            item = await self._queue.get()
            if isinstance(item, Close):
                await deadline.close(self.websocket, item.code, item.reason, self.send_timeout)
                return
            payload = await self.render(item)
            if payload is not None:
                await deadline.send(self.websocket, payload, self.send_timeout)
