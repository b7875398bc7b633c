"""LocalAgent: the HostAgent port served in this process, by a Driver (QEMU's, or the fake).

The driver's callbacks become events on the agent's fan-out; its paths stay on this side: an
image reference becomes the paths of the files in the image store here, the serial log is read
here and the VNC socket is opened here, so what crosses the port is names, numbers and bytes.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from voidvm_server.agent.events import EventFanout, Feed
from voidvm_server.agent.port import ConsoleOutput, ImageRef, VMExited, VMPaused, VMPlan, VMStats
from voidvm_server.drivers.base import BootMedia, Driver, VMSpec
from voidvm_server.drivers.console_log import read_tail
from voidvm_server.errors import DriverError

VNC_CONNECT_SECONDS = 5.0
FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")  # in the image's directory, never a path


def boot_media(image: ImageRef, images_root: Path) -> BootMedia:
    """The files of `image` in the store at `images_root` (<root>/<image id>/<file name>)."""
    if not all(FILE_NAME.match(name) for name in (image.image_id, *image.files.values())):
        raise ValueError("invalid image reference")
    files = {role: images_root / image.image_id / name for role, name in image.files.items()}
    if image.format == "kernel":
        return BootMedia(
            kernel=files["kernel"], initrd=files.get("initrd"), kernel_cmdline=image.kernel_cmdline
        )
    if image.format == "iso":
        return BootMedia(cdrom=files["disk"])
    return BootMedia(base_disk=files["disk"], base_format=image.format)


class LocalAgent:
    def __init__(self, driver: Driver, images_root: Path) -> None:
        # Public for tests and tools of this host only (paths of a run directory): the services
        # never reach past the port.
        self.driver = driver
        self.images_root = images_root
        self.accel = driver.accel
        self._events = EventFanout()
        publish = self._events.publish
        driver.set_exit_handler(
            lambda vm_id, pid, clean, reason: publish(VMExited(vm_id, pid, clean, reason))
        )
        driver.set_pause_handler(lambda vm_id, reason: publish(VMPaused(vm_id, reason)))
        driver.set_console_handler(self._printed)
        self._console_ends: dict[str, int] = {}

    def _printed(self, vm_id: str, data: bytes) -> None:
        end = self._console_ends[vm_id] = self._console_ends.get(vm_id, 0) + len(data)
        self._events.publish(ConsoleOutput(vm_id, data, end))

    def subscribe(self) -> Feed:
        return self._events.subscribe()

    async def prepare_disk(self, vm_id: str, image: ImageRef, size_gb: int) -> None:
        await self.driver.prepare_disk(vm_id, boot_media(image, self.images_root), size_gb)

    async def has_disk(self, vm_id: str) -> bool:
        return self.driver.has_disk(vm_id)

    async def grow_disk(self, vm_id: str, size_gb: int) -> None:
        await self.driver.grow_disk(vm_id, size_gb)

    async def disk_allocated_bytes(self, vm_id: str) -> int | None:
        return self.driver.disk_allocated_bytes(vm_id)

    async def destroy(self, vm_id: str) -> None:
        await self.driver.destroy(vm_id)
        self._console_ends.pop(vm_id, None)

    async def start(self, plan: VMPlan) -> int:
        media = boot_media(plan.image, self.images_root)
        return await self.driver.start(VMSpec(plan.vm_id, plan.cpu, plan.memory_mb, media, plan.ssh_port))

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
