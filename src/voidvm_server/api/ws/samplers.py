"""Periodic subscriptions (`vm-metrics`, `system-monitor`): one task per topic and VM.

The first sample goes out at once, the next ones every `period` seconds (at least 1 s). A sample
that fails with a domain error (the VM was deleted, ...) is answered with `error` and ends that
subscription; the socket stays open.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from voidvm_server.errors import VoidVMError

log = logging.getLogger(__name__)
Sample = Callable[[], Awaitable[dict[str, Any]]]
Key = tuple[str, str | None]  # (topic, vmId)


class Samplers:
    def __init__(
        self,
        push: Callable[[str, dict[str, Any]], None],
        fail: Callable[[VoidVMError, str | None], None],
    ) -> None:
        self._push = push
        self._fail = fail
        self._tasks: dict[Key, asyncio.Task[None]] = {}

    def start(self, key: Key, period: float, sample: Sample) -> None:
        """Start (or restart, with a new period) the subscription `key`."""
        self.stop(key)
        self._tasks[key] = asyncio.get_running_loop().create_task(self._run(key, period, sample))

    def stop(self, key: Key) -> bool:
        task = self._tasks.pop(key, None)
        if task is None:
            return False
        task.cancel()
        return True

    def __contains__(self, key: Key) -> bool:
        return key in self._tasks

    async def _run(self, key: Key, period: float, sample: Sample) -> None:
        topic, vm_id = key
        try:
            while True:
                try:
                    data = await sample()
                except VoidVMError as exc:
                    self._fail(exc, vm_id)
                    return
                self._push(topic, data)
                await asyncio.sleep(period)
        finally:
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def host_sample(data_dir: str) -> dict[str, Any]:
    """The host's load right now (blocking calls: run it in a thread)."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(data_dir)
    load1, load5, load15 = os.getloadavg()
    return {
        "cpu": {"count": os.cpu_count(), "percent": psutil.cpu_percent(None)},
        "memory": {
            "total_mb": memory.total // 2**20,
            "used_mb": (memory.total - memory.available) // 2**20,
            "percent": memory.percent,
        },
        "disk": {
            "total_gb": round(disk.total / 2**30, 1),
            "used_gb": round(disk.used / 2**30, 1),
            "percent": disk.percent,
        },
        "load": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }
