"""Send deadlines: a client that stops reading is cut off instead of holding its socket forever.

uvicorn's `send` and `close` wait while the connection's write buffer is over its high-water mark,
and nothing ends that wait while the client stays connected without reading: even its keepalive
timeout only calls `transport.close()`, which waits for that buffer to drain first. So every send
and close here has a deadline (`ws_send_timeout_seconds`); past it the connection is aborted:
dropped with its buffers, the kernel's included (an RST, no close frame), and the handler's
pending and later calls see a disconnect.

uvicorn gives the app no way to abort; `AbortableWebSocketsProtocol` (uvicorn's default
implementation, which `voidvm-server serve` runs) adds one to the scope, and aborts on its own
keepalive timeout too. Under another server the handler still ends on time; the socket is then
left to that server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger(__name__)
ABORT = "voidvm.abort"  # the scope extension: {"abort": Callable[[str], None]}
NO_LINGER = struct.pack("ii", 1, 0)  # close() sends an RST and frees the unsent data at once


class StalledClient(Exception):
    """The client took no data within the deadline; its connection has been aborted."""


async def send(websocket: WebSocket, payload: str | bytes, timeout: float) -> None:
    """Send one message; a client that does not take it within `timeout` seconds is cut off."""
    try:
        async with asyncio.timeout(timeout):
            if isinstance(payload, bytes):
                await websocket.send_bytes(payload)
            else:
                await websocket.send_text(payload)
    except TimeoutError:
        _give_up(websocket, timeout)
        raise StalledClient(f"the client took no data for {timeout:g} s") from None


async def close(websocket: WebSocket, code: int, reason: str, timeout: float) -> None:
    """Close with `code` unless the socket is closed already, under the same deadline."""
    if websocket.application_state is not WebSocketState.CONNECTED:
        return
    try:
        async with asyncio.timeout(timeout):
            await websocket.close(code, reason)
    except TimeoutError:
        _give_up(websocket, timeout)
    except (RuntimeError, OSError, WebSocketDisconnect) as exc:  # the client went first
        log.debug("Closing a WebSocket failed: %s", exc)
    else:
        # The close frame is only queued: uvicorn then waits for the client's reply and for the
        # unsent data to drain, forever if the client never reads again.
        asyncio.get_running_loop().call_later(timeout, abort, websocket, "no close reply in time")


def abort(websocket: WebSocket, why: str) -> None:
    """Drop the connection now (a no-op once it is gone); the handler sees a disconnect."""
    websocket.application_state = WebSocketState.DISCONNECTED
    extension = (websocket.scope.get("extensions") or {}).get(ABORT)
    if extension is None:
        log.debug("Cannot abort a WebSocket (%s): the server offers no %s", why, ABORT)
        return
    extension["abort"](why)


def _give_up(websocket: WebSocket, timeout: float) -> None:
    peer = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "?"
    log.info("WebSocket client %s took no data for %g s; aborting its connection", peer, timeout)
    abort(websocket, "send deadline passed")


class AbortableWebSocketsProtocol(WebSocketsSansIOProtocol):
    """uvicorn's default WebSocket implementation, plus an abort: for the app, and on keepalive
    timeout."""

    async def run_asgi(self) -> None:
        self.scope.setdefault("extensions", {})[ABORT] = {"abort": self.abort}
        await super().run_asgi()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self.abort("no answer to a keepalive ping")  # uvicorn's close would wait for the buffer

    def abort(self, why: str) -> None:
        if self.disconnected:
            return
        log.debug("Aborting the WebSocket connection of %s: %s", self.client, why)
        with contextlib.suppress(OSError):
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, NO_LINGER)
        self.transport.abort()
