"""Console tickets: short-lived, single-use passes for the raw console and VNC WebSockets.

A browser cannot put an `Authorization` header on a WebSocket, and a token in a URL is long-lived.
A ticket is the narrow alternative: issued over authenticated REST, bound to one user, one VM and
one stream kind, valid for `ttl` seconds (30 by default) and redeemable exactly once. Tickets are
rows of the database, so any API worker redeems what another issued; only the secret's digest is
stored, and instead of the credential it was issued under, what that credential stands for (a
`Grant`, checked again when the ticket is redeemed and while the socket stays open).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from voidvm_server.auth.principal import Grant
from voidvm_server.errors import AuthError
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.tickets import TicketRepository

StreamKind = Literal["serial", "vnc"]


@dataclass(frozen=True)
class Ticket:
    grant: Grant  # the credential it was issued under: the socket is revoked with it
    vm_id: str
    kind: StreamKind


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TicketService:
    def __init__(
        self, db: Database, ttl_seconds: float = 30.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.ttl = ttl_seconds
        self._clock = clock  # wall-clock seconds: every worker reads the same expiry the same way

    async def issue(self, grant: Grant, vm_id: str, kind: StreamKind) -> str:
        """A new ticket's secret. The caller has already checked that the grant's user may use the VM."""
        secret = secrets.token_urlsafe(32)
        stamp = self._clock()
        async with self.db.session() as s:
            tickets = TicketRepository(s)
            await tickets.sweep(stamp)
            await tickets.add(_digest(secret), grant, vm_id, kind, stamp + self.ttl)
        return secret

    async def redeem(self, secret: str, vm_id: str, kind: StreamKind) -> Ticket:
        """Spend a ticket; any mismatch (VM, kind, expiry, reuse) is the same INVALID_TICKET."""
        async with self.db.session() as s:
            taken = await TicketRepository(s).take(_digest(secret))
        if taken is None or taken[3] < self._clock():
            raise AuthError("The console ticket is invalid, expired or already used", code="INVALID_TICKET")
        grant, ticket_vm, ticket_kind, _ = taken
        if ticket_vm != vm_id or ticket_kind != kind:
            raise AuthError("The console ticket was issued for another stream", code="INVALID_TICKET")
        return Ticket(grant, ticket_vm, kind)

    async def count(self) -> int:
        """Tickets issued and not yet redeemed or swept."""
        async with self.db.reading() as s:
            return await TicketRepository(s).count()
