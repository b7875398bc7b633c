"""LoginGuard: failed password checks counted before the check, so guesses cannot race past it.

Every attempt is presumed to fail: it spends one unit of three budgets *before* the password is
checked, and a correct password gives them back. So 30 parallel guesses at a 5-failure budget get
5 checks, not 29. The budgets:

- per account and client address (`login_max_failures` within `login_lockout_seconds`): the
  lockout. It shuts out the address that guessed, not the account, so an anonymous attacker
  cannot keep a user out: the user, from their own address, still signs in.
- per account from every address together (`login_max_failures_per_account`, same window): a
  ceiling for guesses spread over many addresses. It would need that many failures from
  `max_per_account / max_failures` addresses to lock the account for everyone, for one window.
- per client address over all accounts (`login_attempts_per_minute`): password spraying.

IPv6 clients are counted by their /64, which one host usually holds whole. The budgets are kept
for every name, existing or not, and the answers do not depend on it: they never tell whether an
account exists. Counters live in the rate limiter's storage (memory, or Redis when shared).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from voidvm_server.config import Settings
from voidvm_server.errors import TooManyRequestsError
from voidvm_server.services.ratelimit import RateLimiter


@dataclass(frozen=True)
class Budget:
    key: str
    window_seconds: int
    limit: int
    refusal: str  # what a refused caller is told


@dataclass(frozen=True)
class Claim:
    """The budgets one attempt spent; `LoginGuard.succeeded` gives them back."""

    budgets: tuple[Budget, ...]


def address_key(client: str) -> str:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client[:64]
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class LoginGuard:
    def __init__(self, limiter: RateLimiter, settings: Settings) -> None:
        self.limiter = limiter
        self.settings = settings

    def _budgets(self, username: str, client: str) -> tuple[Budget, ...]:
        name, address = username.lower()[:64], address_key(client)
        window = self.settings.login_lockout_seconds
        return (
            Budget(f"login/address/{address}", 60, self.settings.login_attempts_per_minute,
                   "Too many failed logins from your address"),
            Budget(f"login/pair/{address}/{name}", window, self.settings.login_max_failures,
                   "Too many failed logins for this account from your address"),
            Budget(f"login/account/{name}", window, self.settings.login_max_failures_per_account,
                   "Too many failed logins for this account"),
        )  # fmt: skip

    async def claim(self, username: str, client: str) -> Claim:
        """Spend one attempt of every budget, or none: TooManyRequestsError when one is used up."""
        spent: list[Budget] = []
        for budget in self._budgets(username, client):
            value, retry_after = await self.limiter.count(budget.key, budget.window_seconds)
            if value > budget.limit:
                await self.limiter.count(budget.key, budget.window_seconds, -1)
                await self._give_back(spent)
                raise TooManyRequestsError(
                    f"{budget.refusal}; try again in {retry_after} s",
                    code="TOO_MANY_ATTEMPTS",
                    retry_after=retry_after,
                )
            spent.append(budget)
        return Claim(tuple(spent))

    async def succeeded(self, claim: Claim) -> None:
        """The password was right (or was never checked): the attempt was no failure."""
        await self._give_back(claim.budgets)

    async def _give_back(self, budgets: list[Budget] | tuple[Budget, ...]) -> None:
        for budget in budgets:
            value, _ = await self.limiter.count(budget.key, budget.window_seconds, -1)
            if value < 0:  # the window ended meanwhile: a fresh one starts at zero, not below
                await self.limiter.count(budget.key, budget.window_seconds, -value)
