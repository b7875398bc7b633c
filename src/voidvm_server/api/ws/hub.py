"""ConnectionHub: every open WebSocket, its limits, its events and its credentials.

- Admission, in two pools. A socket that has not authenticated yet (a `/ws` waiting for its
  `auth` message, within the grace period) is *anonymous*: at most `max_anonymous_per_client` of
  them per client address and `max_anonymous` in all. An authenticated socket counts against
  its user (`max_per_user`, then an error and close 1008) and the server (`max_total`, then close
  1013). So anonymous sockets, however many reconnect loops open them, never take a signed-in
  user's place. A slot is freed the moment a socket ends, however it ends (uvicorn's pings
  notice vanished clients).
- Fan-out: one EventBus listener hands every event to every socket, synchronously, in id order;
  each socket filters by its own subscriptions and queues what it keeps.
- Revocation: every `revalidate_seconds` each distinct credential is authenticated again; the
  sockets whose token was revoked or expired, or whose user was disabled, get an `error` and close
  4401. Principals are refreshed on the way, so a role change reaches open sockets too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from voidvm_server.api.ws.protocol import CLOSE_POLICY, CLOSE_TRY_LATER
from voidvm_server.api.ws.rendering import EventRenderer
from voidvm_server.auth.principal import Principal
from voidvm_server.errors import AuthError
from voidvm_server.events.bus import Event, EventBus
from voidvm_server.services.ratelimit import client_key

log = logging.getLogger(__name__)
Authenticate = Callable[[str], Awaitable[Principal]]


@dataclass(frozen=True)
class Refusal:
    code: int  # the WebSocket close code
    reason: str
    full: Literal["user", "server"]


class Member(Protocol):
    """What the hub needs of a socket."""

    principal: Principal | None
    credential: str | None

    def deliver(self, event: Event) -> None:
        """An event from the bus; filter and queue it without blocking."""

    def refuse(self, code: int, reason: str, error: AuthError | None = None) -> None:
        """Close soon with `code`, sending `error` first when the socket speaks JSON."""


class ConnectionHub:
    def __init__(
        self,
        bus: EventBus,
        authenticate: Authenticate,
        *,
        max_per_user: int,
        max_total: int,
        revalidate_seconds: float,
        max_anonymous: int = 100,
        max_anonymous_per_client: int = 10,
    ) -> None:
        self.bus = bus
        self.authenticate = authenticate
        self.max_per_user = max_per_user
        self.max_total = max_total
        self.max_anonymous = max_anonymous
        self.max_anonymous_per_client = max_anonymous_per_client
        self.revalidate_seconds = revalidate_seconds
        self.renderer = EventRenderer()
        self._members: set[Member] = set()  # authenticated
        self._by_user: dict[str, set[Member]] = defaultdict(set)
        self._anonymous: dict[Member, str] = {}  # socket -> its client address
        self._anonymous_by_client: Counter[str] = Counter()
        self._sweeper: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] = lambda: None

    # -- admission -------------------------------------------------------------------------------
    def admit_anonymous(self, member: Member, address: str) -> bool:
        """Count a socket that has yet to authenticate; False when its client (its address, an
        IPv6 /64, or loopback as a whole: `client_key`) or the server holds as many as allowed."""
        client = client_key(address)
        if (
            len(self._anonymous) >= self.max_anonymous
            or self._anonymous_by_client[client] >= self.max_anonymous_per_client
        ):
            return False
        self._anonymous[member] = client
        self._anonymous_by_client[client] += 1
        return True

    def bind(self, member: Member, principal: Principal) -> Refusal | None:
        """Count an authenticated socket against its user and the server (leaving the anonymous
        pool); the refusal when either is full."""
        sockets = self._by_user[principal.id]
        if member not in sockets:
            if len(sockets) >= self.max_per_user:
                return Refusal(
                    CLOSE_POLICY, f"at most {self.max_per_user} WebSocket connections per user", "user"
                )
            if len(self._members) >= self.max_total:
                return Refusal(CLOSE_TRY_LATER, "the server is at its WebSocket capacity", "server")
        self._forget_anonymous(member)
        sockets.add(member)
        self._members.add(member)
        return None

    def leave(self, member: Member) -> None:
        self._forget_anonymous(member)
        self._members.discard(member)
        if member.principal is not None:
            sockets = self._by_user.get(member.principal.id)
            if sockets is not None:
                sockets.discard(member)
                if not sockets:
                    del self._by_user[member.principal.id]

    def _forget_anonymous(self, member: Member) -> None:
        client = self._anonymous.pop(member, None)
        if client is not None:
            self._anonymous_by_client[client] -= 1
            if self._anonymous_by_client[client] <= 0:
                del self._anonymous_by_client[client]

    @property
    def total(self) -> int:
        return len(self._members)

    @property
    def anonymous(self) -> int:
        return len(self._anonymous)

    def count_for(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def close_for_user(self, user_id: str, code: int, reason: str) -> int:
        """Close every socket of one user (say, right after disabling them); how many there were."""
        members = list(self._by_user.get(user_id, ()))
        for member in members:
            member.refuse(code, reason)
        return len(members)

    # -- events ----------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        for member in list(self._members):
            try:
                member.deliver(event)
            except Exception:  # one broken socket must not starve the others
                log.exception("Delivering event %d failed", event.id)

    # -- revocation ------------------------------------------------------------------------------
    async def revalidate(self) -> None:
        """Authenticate every distinct credential again; close the sockets of the failed ones."""
        groups: dict[str, list[Member]] = defaultdict(list)
        for member in list(self._members):
            if member.credential is not None and member.principal is not None:
                groups[member.credential].append(member)
        for credential, members in groups.items():
            try:
                principal = await self.authenticate(credential)
            except AuthError as exc:
                for member in members:
                    member.refuse(4401, exc.message, exc)
                continue
            for member in members:
                if member.principal is None or member.principal.id != principal.id:
                    continue
                if member.principal.user.role is not principal.user.role:
                    # Attached consoles were authorized under the old role: start over.
                    member.refuse(4401, "Your role changed; connect again")
                    continue
                member.principal = principal

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.revalidate_seconds)
            try:
                await self.revalidate()
            except Exception:
                log.exception("Re-validating WebSocket credentials failed")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._unlisten = self.bus.listen(self._on_event)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        self._unlisten()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        for member in list(self._members):
            member.refuse(1001, "the server is shutting down")
        self.renderer.close()
