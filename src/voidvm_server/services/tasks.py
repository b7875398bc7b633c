"""BackgroundTasks: the one owner of the work that outlives the request that began it.

Every service that leaves work running (a `wait: false` action, an image pull, a crash restart)
hands it here, so a shutdown cancels and awaits all of it in one place and no task is lost to the
garbage collector while it runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from voidvm_server.errors import VoidVMError

log = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        if isinstance(error, VoidVMError):  # an expected refusal, recorded by whoever ran it
            log.info("Background task %s ended: %s", task.get_name(), error.message)
        else:
            log.error("Background task %s failed", task.get_name(), exc_info=error)

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Wait until every task running now (and any they spawn meanwhile) has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel every task and wait until each has ended."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def every(seconds: float, work: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `work` now, then every `seconds`, for good (a service's own housekeeping task, which
    `wait_idle` must not wait on). A failed round, the database away say, is logged; the next
    round tries again."""
    while True:
        try:
            await work()
        except Exception:
            log.warning("%s failed", what, exc_info=True)
        await asyncio.sleep(seconds)
