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

Clients are counted by `client_key`: an IPv6 client by its /64, which one host usually holds
whole, and every loopback address as one (a local user can bind any of 127.0.0.0/8). The budgets are kept
for every name, existing or not, and the answers do not depend on it: they never tell whether an
account exists. The counters are kept where the rate limiter keeps its budgets (a SQLite file
shared by every worker on the host, or Redis when `redis_url` is set), so a guess counts the same
whichever worker it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass

from voidvm_server.config import Settings
from voidvm_server.errors import TooManyRequestsError
from voidvm_server.services.ratelimit import RateLimiter, client_key

GENERATION_SECONDS = 30 * 24 * 3600  # longer than any budget's window


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


class LoginGuard:
    def __init__(self, limiter: RateLimiter, settings: Settings) -> None:
        self.limiter = limiter
        self.settings = settings

    async def _budgets(self, username: str, client: str) -> tuple[Budget, ...]:
        name, address = username.lower()[:64], client_key(client)
        window = self.settings.login_lockout_seconds
        # An admin's `forgive` moves the account to a new generation: its old failures are gone.
        generation = await self.limiter.peek(f"login/generation/{name}")
        return (
            Budget(f"login/address/{address}", 60, self.settings.login_attempts_per_minute,
                   "Too many failed logins from your address"),
            Budget(f"login/pair/{generation}/{address}/{name}", window, self.settings.login_max_failures,
                   "Too many failed logins for this account from your address"),
            Budget(f"login/account/{generation}/{name}", window,
                   self.settings.login_max_failures_per_account, "Too many failed logins for this account"),
        )  # fmt: skip

    async def forgive(self, username: str) -> None:
        """Forget every failed login of one account (an admin re-enabling it or setting its
        password), from every address."""
        await self.limiter.count(f"login/generation/{username.lower()[:64]}", GENERATION_SECONDS)

    async def claim(self, username: str, client: str) -> Claim:
        """Spend one attempt of every budget, or none: TooManyRequestsError when one is used up."""
        spent: list[Budget] = []
        for budget in await self._budgets(username, client):
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
