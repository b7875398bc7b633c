"""ConnectionHub: every open WebSocket, its limits, its events and its credentials.

- Admission, in two pools. A socket that has not authenticated yet (a `/ws` waiting for its
  `auth` message, within the grace period) is *anonymous*: at most `max_anonymous_per_client` of
  them per client address and `max_anonymous` in all. An authenticated socket counts against
  this process (`max_total`, then close 1013) and its user (`max_per_user`, then an error and
  close 1008), the latter across every API worker through a seat in the database
  (`services/workers.py`). So anonymous sockets, however many reconnect loops open them, never
  take a signed-in user's place. A slot is freed the moment a socket ends, however it ends
  (uvicorn's pings notice vanished clients).
- Fan-out: one EventBus listener hands every event to every socket, synchronously, in id order;
  each socket filters by its own subscriptions and queues what it keeps.
- Revocation: every `revalidate_seconds` each distinct credential (the `Grant` a socket's
  principal holds: the raw token is never kept) is checked again; the sockets whose token was
  revoked or expired, or whose user was disabled, get an `error` and close 4401. Principals are
  refreshed on the way, so a role change reaches open sockets too.
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
from voidvm_server.auth.principal import Grant, Principal
from voidvm_server.errors import AuthError
from voidvm_server.events.bus import Event, EventBus
from voidvm_server.services.ratelimit import client_key
from voidvm_server.services.workers import WorkerPresence

log = logging.getLogger(__name__)
Revalidate = Callable[[Grant], Awaitable[Principal]]


@dataclass(frozen=True)
class Refusal:
    code: int  # the WebSocket close code
    reason: str
    full: Literal["user", "server"]


class Member(Protocol):
    """What the hub needs of a socket."""

    principal: Principal | None

    def deliver(self, event: Event) -> None:
        """An event from the bus; filter and queue it without blocking."""

    def refuse(self, code: int, reason: str, error: AuthError | None = None) -> None:
        """Close soon with `code`, sending `error` first when the socket speaks JSON."""


class ConnectionHub:
    def __init__(
        self,
        bus: EventBus,
        revalidate: Revalidate,
        *,
        max_per_user: int,
        max_total: int,
        revalidate_seconds: float,
        max_anonymous: int = 100,
        max_anonymous_per_client: int = 10,
        presence: WorkerPresence | None = None,
    ) -> None:
        self.bus = bus
        self._revalidate = revalidate
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
        self.presence = presence  # None: one process serves, its own count is the user's
        self._seats: dict[Member, int] = {}
        self._binding: set[Member] = set()  # authenticated, claiming a seat
        self._freeing: set[asyncio.Task[None]] = set()
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

    async def bind(self, member: Member, principal: Principal) -> Refusal | None:
        """Count an authenticated socket against the server and its user (leaving the anonymous
        pool); the refusal when either is full."""
        if member not in self._by_user[principal.id]:
            if len(self._members) + len(self._binding) >= self.max_total:
                return Refusal(CLOSE_TRY_LATER, "the server is at its WebSocket capacity", "server")
            user_full = Refusal(
                CLOSE_POLICY, f"at most {self.max_per_user} WebSocket connections per user", "user"
            )
            if self.presence is None:
                if len(self._by_user[principal.id]) >= self.max_per_user:
                    return user_full
            else:
                self._binding.add(member)  # holds its place in `max_total` while the seat is claimed
                claim = asyncio.ensure_future(self.presence.claim_seat(principal.id, self.max_per_user))
                try:
                    seat = await asyncio.shield(claim)
                except asyncio.CancelledError:  # the socket went meanwhile: a seat taken is given back
                    claim.add_done_callback(self._give_back)
                    raise
                finally:
                    self._binding.discard(member)
                if seat is None:
                    return user_full
                self._seats[member] = seat
        sockets = self._by_user[principal.id]
        self._forget_anonymous(member)
        sockets.add(member)
        self._members.add(member)
        return None

    def leave(self, member: Member) -> None:
        self._forget_anonymous(member)
        self._members.discard(member)
        seat = self._seats.pop(member, None)
        if seat is not None and self.presence is not None:
            # Freed in the background: a socket's end must not wait for the database.
            task = asyncio.get_running_loop().create_task(self._free(self.presence, seat))
            self._freeing.add(task)
            task.add_done_callback(self._freeing.discard)
        if member.principal is not None:
            sockets = self._by_user.get(member.principal.id)
            if sockets is not None:
                sockets.discard(member)
                if not sockets:
                    del self._by_user[member.principal.id]

    def _give_back(self, claim: asyncio.Future[int | None]) -> None:
        if claim.cancelled() or claim.exception() is not None or self.presence is None:
            return
        seat = claim.result()
        if seat is not None:
            task = asyncio.get_running_loop().create_task(self._free(self.presence, seat))
            self._freeing.add(task)
            task.add_done_callback(self._freeing.discard)

    @staticmethod
    async def _free(presence: WorkerPresence, seat: int) -> None:
        try:
            await presence.free_seat(seat)
        except Exception:  # the seat stays counted until this worker's row goes
            log.warning("Freeing WebSocket seat %d failed", seat, exc_info=True)

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
        """Check every distinct credential again; close the sockets of the failed ones."""
        groups: dict[Grant, list[Member]] = defaultdict(list)
        for member in list(self._members):
            if member.principal is not None:
                groups[member.principal.grant].append(member)
        for grant, members in groups.items():
            try:
                principal = await self._revalidate(grant)
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
        if self._freeing:
            await asyncio.gather(*list(self._freeing), return_exceptions=True)
        self.renderer.close()
