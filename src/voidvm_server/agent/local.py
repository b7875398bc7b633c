"""LocalAgent: the HostAgent port served in this process, by a Driver (QEMU's, or the fake).

The driver's callbacks become events on the agent's fan-out; its paths stay on this side: the
serial log is read here and the VNC socket is opened here, so what crosses the port is bytes.
"""

from __future__ import annotations

import asyncio

from voidvm_server.agent.events import EventFanout, Feed
from voidvm_server.agent.port import BootMedia, ConsoleOutput, VMExited, VMPaused, VMSpec, VMStats
from voidvm_server.drivers.base import Driver
from voidvm_server.drivers.console_log import read_tail
from voidvm_server.errors import DriverError

VNC_CONNECT_SECONDS = 5.0


class LocalAgent:
    def __init__(self, driver: Driver) -> None:
        # Public for tests and tools of this host only (paths of a run directory): the services
        # never reach past the port.
        self.driver = driver
        self.accel = driver.accel
        self._events = EventFanout()
        publish = self._events.publish
        driver.set_exit_handler(lambda vm_id, clean, reason: publish(VMExited(vm_id, clean, reason)))
        driver.set_pause_handler(lambda vm_id, reason: publish(VMPaused(vm_id, reason)))
        driver.set_console_handler(self._printed)
        self._console_ends: dict[str, int] = {}

    def _printed(self, vm_id: str, data: bytes) -> None:
        end = self._console_ends[vm_id] = self._console_ends.get(vm_id, 0) + len(data)
        self._events.publish(ConsoleOutput(vm_id, data, end))

    def subscribe(self) -> Feed:
        return self._events.subscribe()

    async def prepare_disk(self, vm_id: str, media: BootMedia, size_gb: int) -> None:
        await self.driver.prepare_disk(vm_id, media, size_gb)

    async def has_disk(self, vm_id: str) -> bool:
        return self.driver.has_disk(vm_id)

    async def grow_disk(self, vm_id: str, size_gb: int) -> None:
        await self.driver.grow_disk(vm_id, size_gb)

    async def disk_allocated_bytes(self, vm_id: str) -> int | None:
        return self.driver.disk_allocated_bytes(vm_id)

    async def destroy(self, vm_id: str) -> None:
        await self.driver.destroy(vm_id)

    async def start(self, spec: VMSpec) -> int:
        return await self.driver.start(spec)

    async def attach(self, vm_id: str) -> int | None:
        return await self.driver.attach(vm_id)

    async def known_vms(self) -> list[str]:
        return self.driver.known_run_dirs()

    async def is_running(self, vm_id: str) -> bool:
        return self.driver.is_running(vm_id)

    async def powerdown(self, vm_id: str) -> None:
        await self.driver.powerdown(vm_id)

    async def kill(self, vm_id: str) -> None:
        await self.driver.kill(vm_id)

    async def wait_exit(self, vm_id: str, timeout: float) -> bool:
        return await self.driver.wait_exit(vm_id, timeout)

    async def pause(self, vm_id: str) -> None:
        await self.driver.pause(vm_id)

    async def resume(self, vm_id: str) -> None:
        await self.driver.resume(vm_id)

    async def reset(self, vm_id: str) -> None:
        await self.driver.reset(vm_id)

    async def query_status(self, vm_id: str) -> str:
        return await self.driver.query_status(vm_id)

    async def stats(self, vm_id: str) -> VMStats:
        return await self.driver.stats(vm_id)

    async def console_recent(self, vm_id: str) -> tuple[bytes, int]:
        # Both from this one step of the loop: the replay buffer and the count grow together.
        return self.driver.console_recent(vm_id), self._console_ends.get(vm_id, 0)

    async def console_write(self, vm_id: str, data: bytes) -> None:
        await self.driver.console_write(vm_id, data)

    async def console_saved(self, vm_id: str, limit: int) -> tuple[bytes, int]:
        return await asyncio.to_thread(read_tail, self.driver.console_log(vm_id), limit)

    async def open_vnc(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(VNC_CONNECT_SECONDS):
                return await asyncio.open_unix_connection(str(self.driver.vnc_socket(vm_id)))
        except (OSError, TimeoutError):
            raise DriverError("The VM's display is not reachable") from None

    async def close(self) -> None:
        await self.driver.close()
