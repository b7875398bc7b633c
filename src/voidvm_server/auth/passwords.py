"""argon2id password hashing, and the bounded pool the server runs it in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from voidvm_server.errors import TooManyRequestsError

T = TypeVar("T")

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# Verified against when the username does not exist, so both paths cost the same time.
DUMMY_HASH = hash_password("voidvm-timing-equaliser")


def _lower_priority() -> None:
    """Hashing threads yield the CPU to the event loop: a login flood must not slow other requests.
    (On Linux a thread id names one thread for setpriority; argon2's own threads inherit it.)"""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class PasswordHashing:
    """argon2 in a thread pool of its own, with a cap on the checks waiting for it.

    Every check costs ~0.1 s of CPU. On the default executor a flood of logins would also queue
    ahead of every other thread hand-off of the server, and 40 hashes at once would take both
    cores from the event loop. Here they run in `workers` low-priority threads, and beyond
    `max_in_flight` waiting calls the next one is refused at once (429 `LOGIN_BUSY`).
    """

    def __init__(self, *, workers: int = 1, max_in_flight: int = 8) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self.max_in_flight = max_in_flight
        self._in_flight = 0

    async def verify(self, password_hash: str, password: str) -> bool:
        """A password check (a login, a password change): refused beyond the cap."""
        return await self._run(verify_password, password_hash, password, capped=True)

    async def hash(self, password: str) -> str:
        """A new hash (an admin creating a user, a password set): signed-in work that waits its
        turn in the pool instead of being refused by a login flood."""
        return await self._run(hash_password, password, capped=False)

    async def _run(self, function: Callable[..., T], *args: str, capped: bool) -> T:
        if capped and self._in_flight >= self.max_in_flight:
            raise TooManyRequestsError(
                "The server is checking too many passwords at once; retry in a moment",
                code="LOGIN_BUSY",
                retry_after=1,
            )
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, function, *args)
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
