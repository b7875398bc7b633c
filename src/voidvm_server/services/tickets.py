"""Console tickets: short-lived, single-use passes for the raw console and VNC WebSockets.

A browser cannot put an `Authorization` header on a WebSocket, and a token in a URL is long-lived.
A ticket is the narrow alternative: issued over authenticated REST, bound to one user, one VM and
one stream kind, valid for `ttl` seconds (30 by default) and redeemable exactly once. Tickets live
in memory only: a server restart voids them all, which costs a client one more POST.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from voidvm_server.auth.principal import Principal
from voidvm_server.errors import AuthError

StreamKind = Literal["serial", "vnc"]


@dataclass(frozen=True)
class Ticket:
    principal: Principal
    credential: str  # the token the ticket was issued under: the socket is revoked with it
    vm_id: str
    kind: StreamKind
    expires_at: float


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TicketService:
    def __init__(self, ttl_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self._clock = clock
        self._tickets: dict[str, Ticket] = {}  # sha256(secret) -> ticket; the secret is never kept

    def issue(self, principal: Principal, credential: str, vm_id: str, kind: StreamKind) -> str:
        """A new ticket's secret. The caller has already checked that `principal` may use the VM."""
        self._sweep()
        secret = secrets.token_urlsafe(32)
        self._tickets[_digest(secret)] = Ticket(principal, credential, vm_id, kind, self._clock() + self.ttl)
        return secret

    def redeem(self, secret: str, vm_id: str, kind: StreamKind) -> Ticket:
        """Spend a ticket; any mismatch (VM, kind, expiry, reuse) is the same INVALID_TICKET."""
        ticket = self._tickets.pop(_digest(secret), None)
        if ticket is None or ticket.expires_at < self._clock():
            raise AuthError("The console ticket is invalid, expired or already used", code="INVALID_TICKET")
        if ticket.vm_id != vm_id or ticket.kind != kind:
            raise AuthError("The console ticket was issued for another stream", code="INVALID_TICKET")
        return ticket

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, t in self._tickets.items() if t.expires_at < now]:
            del self._tickets[key]

    def __len__(self) -> int:
        return len(self._tickets)
