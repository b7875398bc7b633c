"""EventSocket: one /ws connection, from handshake to close, as an explicit state machine.

    CONNECTING ──accept──▶ AUTHENTICATING ──token ok──▶ OPEN ──▶ CLOSED
         │                      │ bad token: error, close 4401
         │                      │ no auth within the grace period: error, close 4401
         │                      │ user at the socket limit: error, close 1008
         │                      │ server at its authenticated cap: error, close 1013
         └ no token, and its address (or the server) holds all the anonymous sockets it may:
           close 1013

Two tasks per socket: a reader (parse, throttle, dispatch one message at a time, in order) and
the outbox's writer. Whichever ends first ends the socket; everything it owns is released then.
Malformed, throttled or failing requests get an `error` reply and the socket stays open; only a
message over the size cap closes it (1009).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import secrets
from typing import Any

from pydantic import BaseModel
from starlette.websockets import WebSocket

from voidvm_server.api.container import Container
from voidvm_server.api.ws import handlers
from voidvm_server.api.ws import protocol as p
from voidvm_server.api.ws.hub import ConnectionHub
from voidvm_server.api.ws.outbox import Outbox
from voidvm_server.api.ws.samplers import Samplers
from voidvm_server.api.ws.subscriptions import EventRouter
from voidvm_server.api.ws.terminal import Terminals
from voidvm_server.api.ws.throttle import MessageThrottle
from voidvm_server.auth.principal import Principal
from voidvm_server.errors import AuthError, ForbiddenError, TooManyRequestsError, VoidVMError
from voidvm_server.events.bus import Event
from voidvm_server.services import context

log = logging.getLogger(__name__)
Outgoing = Event | dict[str, Any]
KEYSTROKE_TYPES = frozenset({"terminal-input", "terminal-resize"})
KEYSTROKE_FACTOR = 10


class State(enum.Enum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


class EventSocket:
    def __init__(
        self, websocket: WebSocket, container: Container, *, token: str | None, resume_from: int | None
    ) -> None:
        self.websocket = websocket
        self.container = container
        self.hub: ConnectionHub = container.ws_hub
        self.settings = container.settings
        self.state = State.CONNECTING
        self.principal: Principal | None = None
        self._token = token
        self._resume_from = resume_from
        self.outbox: Outbox[Outgoing] = Outbox(
            websocket, self._render, send_timeout=self.settings.ws_send_timeout_seconds
        )
        self.router = EventRouter(container.events, lambda: self.principal, self.outbox.put, self._gap)
        self.samplers = Samplers(self._push, self._fail)
        self.terminals = Terminals(container.consoles, self.reply, self._fail)
        rate = self.settings.ws_messages_per_second
        self.throttle = MessageThrottle(rate)
        self.keystrokes = MessageThrottle(rate * KEYSTROKE_FACTOR)  # typing is many tiny messages
        self._grace: asyncio.TimerHandle | None = None

    # -- the hub's side ------------------------------------------------------------------------
    def deliver(self, event: Event) -> None:
        if self.state is State.OPEN:
            self.router.offer(event)

    def refuse(self, code: int, reason: str, error: AuthError | None = None) -> None:
        if error is not None:
            self.reply("error", p.error_data(error))
        self.outbox.close(code, reason)

    # -- sending -------------------------------------------------------------------------------
    def reply(self, type: str, data: dict[str, Any], msg_id: str | int | None = None) -> None:
        self.outbox.put(p.message(type, data, msg_id))

    def _push(self, type: str, data: dict[str, Any]) -> None:
        self.reply(type, data)

    def _fail(self, exc: VoidVMError, vm_id: str | None, msg_id: str | int | None = None) -> None:
        self.reply("error", p.error_data(exc, vm_id), msg_id)

    def _gap(self, first: int, last: int) -> None:
        self.reply("system-event", {
            "event": "replay-gap", "vmId": None, "userId": None, "level": "warning",
            "message": f"Events {first}..{last} are no longer available; reload the VMs' state over REST",
            "missedFrom": first, "missedTo": last,
        })  # fmt: skip

    async def _render(self, item: Outgoing) -> str | None:
        if isinstance(item, Event):
            return self.hub.renderer.text(item) if self.principal is not None else None
        return p.encode(item)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        context.request_id.set(f"ws-{secrets.token_hex(6)}")
        client = self.websocket.client.host if self.websocket.client else "unknown"
        context.client_ip.set(client)
        # A token in the handshake is checked before anything else, so such a socket is never
        # anonymous; one that will send an `auth` message waits in the anonymous pool.
        if self._token is None and not self.hub.admit_anonymous(self, client):
            await self.websocket.accept()
            await self.websocket.close(p.CLOSE_TRY_LATER, "too many unauthenticated WebSockets; retry later")
            return
        try:
            await self.websocket.accept()
            self.state = State.AUTHENTICATING
            await self._serve()
        finally:
            self.state = State.CLOSED
            self.hub.leave(self)
            if self._grace is not None:
                self._grace.cancel()
            self.router.close()
            await self.samplers.close()
            await self.terminals.close()

    async def _serve(self) -> None:
        writer = asyncio.create_task(self.outbox.run())
        reader = asyncio.create_task(self._read())
        done, pending = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.debug("WebSocket ended: %r", task.exception())

    async def _read(self) -> None:
        if self._token is not None:
            await self._authenticate(self._token, None, by_message=False)
        else:
            grace = self.settings.ws_auth_grace_seconds
            self._grace = asyncio.get_running_loop().call_later(grace, self._auth_timeout)
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            if not self.outbox.closing:
                await self._handle(raw)

    async def _handle(self, raw: str) -> None:
        limit = self.settings.ws_max_message_bytes
        if len(raw) > limit or len(raw.encode()) > limit:
            self._fail(
                p.ProtocolError(f"Messages are limited to {limit} bytes", code="PAYLOAD_TOO_LARGE"), None
            )
            self.outbox.close(p.CLOSE_TOO_BIG, f"message larger than {limit} bytes")
            return
        try:
            envelope, data = p.parse(raw)
        except p.ProtocolError as exc:
            if self._admit(self.throttle, raw):
                self._fail(exc, None, p.peek_id(raw))
            return
        keystrokes = envelope.type in KEYSTROKE_TYPES
        if not self._admit(self.keystrokes if keystrokes else self.throttle, raw):
            return
        vm_id = getattr(data, "vmId", None)
        try:
            await self._dispatch(envelope.type, data, envelope.id)
        except VoidVMError as exc:
            self._fail(exc, vm_id, envelope.id)
        except Exception:
            log.exception("WebSocket request %s failed", envelope.type)
            self._fail(VoidVMError("An internal error occurred"), vm_id, envelope.id)

    def _admit(self, throttle: MessageThrottle, raw: str) -> bool:
        """Spend one message of a budget; over it, the message is dropped (one warning a second)."""
        if throttle.allow():
            return True
        if throttle.should_warn():
            message = (
                f"Too many messages: at most {throttle.rate:g} per second of this kind on one socket; "
                "this one was dropped"
            )
            retry_after = math.ceil(throttle.retry_after)
            self._fail(TooManyRequestsError(message, retry_after=retry_after), None, p.peek_id(raw))
        return False

    async def _dispatch(self, type: str, data: BaseModel, msg_id: str | int | None) -> None:
        if type == "auth":
            assert isinstance(data, p.AuthData)
            await self._authenticate(data.token, msg_id, by_message=True)
        elif self.state is not State.OPEN and type != "ping":
            raise AuthError("Authenticate first: send {type: 'auth', data: {token}}")
        else:
            await handlers.dispatch(self._session(), type, data, msg_id)

    def _session(self) -> handlers.Session:
        def principal() -> Principal:
            if self.principal is None:
                raise AuthError("Authenticate first")
            return self.principal

        return handlers.Session(
            self.container,
            principal,
            self.router,
            self.samplers,
            self.terminals,
            self.reply,
            self._resume_from,
        )

    # -- authentication ------------------------------------------------------------------------
    async def _authenticate(self, token: str, msg_id: str | int | None, *, by_message: bool) -> None:
        try:
            principal = await self.container.auth.authenticate(token)
        except AuthError as exc:
            self._fail(exc, None, msg_id)
            self.outbox.close(p.CLOSE_UNAUTHORIZED, exc.message)
            return
        if self.principal is not None and principal.id != self.principal.id:
            raise AuthError("A socket stays signed in as one user; open another socket", code="FORBIDDEN")
        refusal = await self.hub.bind(self, principal)
        if refusal is not None:
            if refusal.full == "user":
                limit = self.hub.max_per_user
                self._fail(ForbiddenError(
                    f"Too many WebSocket connections: at most {limit} per user; close one and retry",
                    code="TOO_MANY_CONNECTIONS", details={"limit": limit},
                ), None, msg_id)  # fmt: skip
            self.outbox.close(refusal.code, refusal.reason)
            return
        self.principal = principal
        self.state = State.OPEN
        context.user_name.set(principal.user.username)
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if by_message:
            user = principal.user
            self.reply("authenticated", {"userId": user.id, "username": user.username,
                                         "role": user.role.value}, msg_id)  # fmt: skip

    def _auth_timeout(self) -> None:
        if self.state is State.AUTHENTICATING:
            grace = self.settings.ws_auth_grace_seconds
            error = AuthError(f"No auth message within {grace:g} s; send {{type: 'auth', data: {{token}}}}")
            self.refuse(p.CLOSE_UNAUTHORIZED, "authentication timeout", error)
