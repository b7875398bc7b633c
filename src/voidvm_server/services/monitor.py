"""Background sampling of host and VM resource use into bounded in-memory history.

Two rings: fine samples (every `interval` seconds, one day's worth) and hourly averages (30 days).
`GET /system/stats` and the `system-monitor` WebSocket topic read from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from voidvm_server.agent.port import HostAgent
from voidvm_server.errors import VoidVMError

log = logging.getLogger(__name__)
PERIODS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


@dataclass
class Sample:
    timestamp: float
    host_cpu_percent: float
    host_memory_used_mb: float
    vms_running: int
    vm_cpu_percent: dict[str, float] = field(default_factory=dict)
    vm_memory_mb: dict[str, float] = field(default_factory=dict)


def _average(samples: list[Sample]) -> Sample:
    n = len(samples)
    return Sample(
        timestamp=samples[-1].timestamp,
        host_cpu_percent=round(sum(s.host_cpu_percent for s in samples) / n, 1),
        host_memory_used_mb=round(sum(s.host_memory_used_mb for s in samples) / n, 1),
        vms_running=round(sum(s.vms_running for s in samples) / n),
    )


class ResourceMonitor:
    def __init__(self, agent: HostAgent, interval: float = 10.0) -> None:
        self.agent = agent
        self.interval = interval
        self.fine: deque[Sample] = deque(maxlen=int(86400 / interval))
        self.hourly: deque[Sample] = deque(maxlen=30 * 24)
        self._hour: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        psutil.cpu_percent(None)  # prime the host CPU window
        self._task = asyncio.create_task(self._run(), name="resource-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.record(await self.sample())
            except Exception:
                log.exception("Resource sampling failed")

    async def sample(self) -> Sample:
        memory = psutil.virtual_memory()
        sample = Sample(
            timestamp=time.time(),
            host_cpu_percent=psutil.cpu_percent(None),
            host_memory_used_mb=round((memory.total - memory.available) / 2**20, 1),
            vms_running=0,
        )
        for vm_id in await self.running_vms():
            sample.vms_running += 1
            with contextlib.suppress(VoidVMError):
                stats = await self.agent.stats(vm_id)
                sample.vm_cpu_percent[vm_id] = stats.cpu_percent
                sample.vm_memory_mb[vm_id] = stats.memory_used_mb
        return sample

    async def running_vms(self) -> list[str]:
        """Ids of the VMs whose process runs on this host now."""
        return [vm_id for vm_id in await self.agent.known_vms() if await self.agent.is_running(vm_id)]

    def record(self, sample: Sample) -> None:
        self.fine.append(sample)
        self._hour.append(sample)
        if sample.timestamp - self._hour[0].timestamp >= 3600:
            self.hourly.append(_average(self._hour))
            self._hour = []

    def history(self, period: str) -> list[dict[str, Any]]:
        since = time.time() - PERIODS[period]
        source = self.fine if PERIODS[period] <= 86400 else self.hourly
        return [
            {k: v for k, v in asdict(s).items() if k not in {"vm_cpu_percent", "vm_memory_mb"}}
            for s in source
            if s.timestamp >= since
        ]

    def latest(self) -> Sample | None:
        return self.fine[-1] if self.fine else None
