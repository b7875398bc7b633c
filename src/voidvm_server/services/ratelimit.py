"""Request budgets (moving windows) and counters on the `limits` library.

Where they are kept decides who shares them: with `redis_url`, in Redis, shared by every server
using it; else with `shared_path`, in that SQLite file (`SqliteLimitStorage`), shared by every
worker process on the host, so a budget of 100 a minute is 100 however many workers serve it;
with neither (tests), in this process's memory.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.util import WindowStats

from voidvm_server.errors import ServiceUnavailableError
from voidvm_server.services.shared_limits import SqliteLimitStorage

log = logging.getLogger(__name__)


def client_key(address: str) -> str:
    """The unit per-address budgets count: an IPv4 address; an IPv6 client's /64 (one host
    usually holds it whole); and every loopback address as one, since a local user may bind any
    of 127.0.0.0/8 to look like many clients."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _unavailable(exc: sqlite3.Error) -> ServiceUnavailableError:
    log.warning("The rate limits' file cannot be used: %s", exc)
    return ServiceUnavailableError("Sign-in is unavailable for a moment; try again shortly")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # seconds until the window frees a slot


class RateLimiter:
    def __init__(
        self, redis_url: str | None = None, namespace: str = "voidvm", *, shared_path: Path | None = None
    ) -> None:
        self.storage: Storage
        if redis_url:
            uri = "async+" + redis_url if redis_url.startswith("redis") else redis_url
            self.storage = RedisStorage(uri, implementation="redispy", key_prefix=namespace)
        elif shared_path is not None:
            self.storage = SqliteLimitStorage(shared_path)
        else:
            self.storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self.storage)

    @staticmethod
    def parse(limit: str) -> RateLimitItem:
        return parse(limit)

    async def check(self, item: RateLimitItem, *key: str) -> Verdict:
        """Whether one more hit would be allowed, without spending it."""
        allowed = await self._limiter.test(item, *key)
        stats = await self._limiter.get_window_stats(item, *key)
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, item.amount, max(0, stats.remaining), reset_after)

    async def hit(self, item: RateLimitItem, *key: str) -> Verdict:
        """Spend one hit. When the shared file cannot be written (the disk full, say), the hit
        is let through and logged: a request budget is not worth refusing every request for;
        the login budgets (`count`) refuse instead."""
        if isinstance(self.storage, SqliteLimitStorage):  # one trip to its thread, not two
            expiry = item.get_expiry()
            try:
                allowed, oldest, held = await self.storage.acquire_with_window(
                    item.key_for(*key), item.amount, expiry
                )
            except sqlite3.Error as exc:
                log.warning("The rate limits' file cannot be used (%s); the request is let through", exc)
                return Verdict(True, item.amount, item.amount, expiry)
            stats = WindowStats(oldest + expiry, item.amount - held)
        else:
            allowed = await self._limiter.hit(item, *key)
            stats = await self._limiter.get_window_stats(item, *key)
        reset_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, item.amount, max(0, stats.remaining), reset_after)

    async def count(self, key: str, window_seconds: int, amount: int = 1) -> tuple[int, int]:
        """Add `amount` (negative to give back) to a counter that lives `window_seconds` from its
        first hit; returns (the new value, seconds until the window ends). Atomic in every
        storage, so parallel callers (in any worker) each see a distinct value."""
        if isinstance(self.storage, SqliteLimitStorage):  # one trip to its thread, not two
            try:
                value, expires = await self.storage.incr_with_expiry(f"counter/{key}", window_seconds, amount)
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc
        else:
            value = await self.storage.incr(f"counter/{key}", window_seconds, amount)
            expires = await self.storage.get_expiry(f"counter/{key}")
        return value, max(1, math.ceil(expires - time.time()))

    async def peek(self, key: str) -> int:
        """A `count` counter's value (0 when it has none or its window ended)."""
        try:
            return int(await self.storage.get(f"counter/{key}"))
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def clear(self, item: RateLimitItem, *key: str) -> None:
        await self._limiter.clear(item, *key)

    async def reset(self) -> None:
        await self.storage.reset()

    async def close(self) -> None:
        """At shutdown: closes the SQLite file, when the budgets are kept in one."""
        if isinstance(self.storage, SqliteLimitStorage):
            await self.storage.close()
