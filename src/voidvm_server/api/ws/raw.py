"""Raw streams for real terminal and VNC clients: serial bytes (xterm.js) and RFB (noVNC).

Authorized by a single-use ticket (`?ticket=`, from `POST /vms/{id}/console`) or by a token
(`Authorization: Bearer` or `?token=`). Both count against the per-user socket limit and are
closed when the credential behind them is revoked. Binary frames both ways; text frames from
the client are accepted as UTF-8. Close codes: 4401 credentials, 4404 no such VM, 4409 VM not
running, 1008 socket limit, 1009 frame too large, 1013 server full, 1000 stream ended. A client
that takes no data for `ws_send_timeout_seconds` is cut off without a close frame.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket

from voidvm_server.api.container import Container
from voidvm_server.api.ws import deadline
from voidvm_server.api.ws import protocol as p
from voidvm_server.api.ws.guards import bearer
from voidvm_server.api.ws.outbox import Outbox
from voidvm_server.auth.principal import Principal
from voidvm_server.errors import AuthError, DriverError, NotFoundError, ServiceUnavailableError, VoidVMError
from voidvm_server.events.bus import Event
from voidvm_server.services.tickets import StreamKind

log = logging.getLogger(__name__)
CHUNK = 64 * 1024


class RawStream:
    """Admission, authentication and authorization common to both raw streams."""

    kind: StreamKind

    def __init__(self, websocket: WebSocket, container: Container, vm_id: str) -> None:
        self.websocket = websocket
        self.container = container
        self.vm_id = vm_id
        self.send_timeout = container.settings.ws_send_timeout_seconds
        self.principal: Principal | None = None
        self._stop = asyncio.Event()
        self._close = (p.CLOSE_NORMAL, "stream ended")

    def deliver(self, event: Event) -> None:
        return None  # raw streams carry no events

    def refuse(self, code: int, reason: str, error: AuthError | None = None) -> None:
        self._close = (code, reason[:120])
        self._stop.set()

    async def run(self) -> None:
        hub = self.container.ws_hub
        offered = self.websocket.scope.get("subprotocols") or []
        subprotocol = "binary" if "binary" in offered else None
        try:
            await self.websocket.accept(subprotocol)
            refusal = await self._authorize()
            if refusal is None:
                await self.stream()
            else:
                self._close = refusal
        finally:
            hub.leave(self)
            await deadline.close(self.websocket, *self._close, self.send_timeout)

    async def _authorize(self) -> tuple[int, str] | None:
        secret = self.websocket.query_params.get("ticket")
        try:
            if secret:
                ticket = await self.container.tickets.redeem(secret, self.vm_id, self.kind)
                principal = await self.container.auth.revalidate(ticket.grant)
            else:
                token = bearer(self.websocket)
                if token is None:
                    return p.CLOSE_UNAUTHORIZED, "a ticket or a token is required"
                principal = await self.container.auth.authenticate(token)
            vm = await self.container.vms.get(principal, self.vm_id)
        except AuthError as exc:
            return p.CLOSE_UNAUTHORIZED, exc.message
        except NotFoundError as exc:
            return p.CLOSE_NOT_FOUND, exc.message
        except ServiceUnavailableError as exc:  # the database away: tickets and seats live there
            return p.CLOSE_TRY_LATER, exc.message
        if not await self.container.vms.is_process_running(vm.id):
            return p.CLOSE_CONFLICT, "the VM is not running"
        try:
            refusal = await self.container.ws_hub.bind(self, principal)  # raw streams are never anonymous
        except ServiceUnavailableError as exc:
            return p.CLOSE_TRY_LATER, exc.message
        if refusal is not None:
            return refusal.code, refusal.reason
        self.principal = principal
        return None

    async def stream(self) -> None:
        raise NotImplementedError

    async def _receive_bytes(self) -> bytes | None:
        """The client's next frame as bytes; None when it is gone or the frame is too big."""
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data: bytes = message.get("bytes") or (message.get("text") or "").encode()
        if len(data) > self.container.settings.ws_max_message_bytes:
            self._close = (p.CLOSE_TOO_BIG, "frame too large")
            return None
        return data

    async def _until_stopped(self, *tasks: asyncio.Task[Any]) -> None:
        stop = asyncio.create_task(self._stop.wait())
        done, pending = await asyncio.wait({stop, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.debug("Raw %s stream of %s ended: %r", self.kind, self.vm_id, task.exception())


class RawConsole(RawStream):
    """The serial console as bytes: the recent output first, then everything live."""

    kind: StreamKind = "serial"

    def __init__(self, websocket: WebSocket, container: Container, vm_id: str) -> None:
        super().__init__(websocket, container, vm_id)
        self._outbox: Outbox[bytes] = Outbox(
            websocket, self._identity, limit=1024, send_timeout=self.send_timeout
        )

    def on_output(self, data: bytes) -> None:
        self._outbox.put(data)

    def on_closed(self, code: str, reason: str) -> None:
        self._outbox.close(p.CLOSE_NORMAL if code == "VM_NOT_FOUND" else p.CLOSE_GOING_AWAY, reason)

    async def stream(self) -> None:
        consoles = self.container.consoles
        try:
            replay = await consoles.attach(self.vm_id, self)
        except VoidVMError as exc:
            self._close = (p.CLOSE_CONFLICT, exc.message)
            return
        try:
            if replay:
                self._outbox.put(replay)
            writer = asyncio.create_task(self._outbox.run())
            reader = asyncio.create_task(self._pump_input())
            await self._until_stopped(writer, reader)
        finally:
            await consoles.detach(self.vm_id, self)

    @staticmethod
    async def _identity(data: bytes) -> bytes:
        return data

    async def _pump_input(self) -> None:
        while (data := await self._receive_bytes()) is not None:
            try:
                await self.container.consoles.write(self.vm_id, data)
            except VoidVMError as exc:
                log.debug("Console input for %s dropped: %s", self.vm_id, exc.message)


class VncProxy(RawStream):
    """RFB bytes between the client and the VM's unix VNC socket, untouched."""

    kind: StreamKind = "vnc"

    async def stream(self) -> None:
        try:
            reader, writer = await self.container.vms.open_display(self.vm_id)
        except DriverError as exc:
            self._close = (p.CLOSE_CONFLICT, exc.message[0].lower() + exc.message[1:])
            return
        try:
            upstream = asyncio.create_task(self._to_client(reader))
            downstream = asyncio.create_task(self._to_vm(writer))
            await self._until_stopped(upstream, downstream)
        finally:
            writer.close()

    async def _to_client(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(CHUNK):
            await deadline.send(self.websocket, data, self.send_timeout)

    async def _to_vm(self, writer: asyncio.StreamWriter) -> None:
        while (data := await self._receive_bytes()) is not None:
            writer.write(data)
            await writer.drain()
