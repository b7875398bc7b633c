"""QemuDriver: the real hypervisor driver. One detached qemu-system process per VM.

Run directory per VM (`<data>/vms/<vm-id>/`): disk.qcow2, qemu.pid, qmp.sock, serial.sock,
vnc.sock and console.log. Sockets are unix sockets made 0600; nothing listens on TCP except the
optional loopback SSH forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from voidvm_server.drivers.base import BootMedia, ExitHandler, VMSpec, VMStats
from voidvm_server.drivers.qemu.cmdline import RunPaths, build_argv
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.drivers.qemu.process import (
    ExitWatcher,
    is_qemu_process,
    read_pidfile,
    spawn_daemonized,
)
from voidvm_server.drivers.qemu.qmp import QMPConnection
from voidvm_server.errors import DriverError, InvalidStateError, StorageError

log = logging.getLogger(__name__)
GIB = 1024**3
QMP_DRAIN_SECONDS = 2.0  # how long an exited QEMU's last QMP events may take to be read
_FULL = (errno.ENOSPC, errno.EDQUOT)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def storage_problem(exc: BaseException) -> StorageError | None:
    """A StorageError when `exc` (an OSError, or qemu-img's complaint) means the disk is full or
    not writable; None for anything else. qemu-img reports the C library's strerror() text."""
    if isinstance(exc, OSError):
        codes = {exc.errno}
    elif isinstance(exc, DriverError):
        text = str(exc.details or "")
        codes = {code for code in (*_FULL, *_READ_ONLY) if os.strerror(code) in text}
    else:
        return None
    if codes & set(_FULL):
        return StorageError("The server has no space left for the VM's files", code="STORAGE_FULL")
    if codes & set(_READ_ONLY):
        return StorageError("The server's VM storage is not writable", code="STORAGE_READ_ONLY")
    return None


@dataclass
class _Instance:
    vm_id: str
    pid: int
    watcher: ExitWatcher
    qmp: QMPConnection
    process: psutil.Process
    expect_exit: bool = False
    guest_shutdown: bool = False


class QemuDriver:
    def __init__(
        self,
        data_dir: Path,
        *,
        accel: str,
        binary: str = "qemu-system-x86_64",
        qemu_img: QemuImg | None = None,
        qmp_timeout: float = 10.0,
    ) -> None:
        self.vms_dir = data_dir / "vms"
        self.vms_dir.mkdir(parents=True, exist_ok=True)
        self.accel = accel
        self.binary = binary
        self.img = qemu_img or QemuImg()
        self.qmp_timeout = qmp_timeout
        self._instances: dict[str, _Instance] = {}
        self._on_exit: ExitHandler = lambda vm_id, clean, reason: None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- paths -------------------------------------------------------------------------------
    def _paths(self, vm_id: str) -> RunPaths:
        if "/" in vm_id or vm_id in {"", ".", ".."}:
            raise ValueError("invalid VM id")
        return RunPaths(self.vms_dir / vm_id)

    def run_dir(self, vm_id: str) -> Path:
        return self._paths(vm_id).run_dir

    def serial_socket(self, vm_id: str) -> Path:
        return self._paths(vm_id).serial

    def vnc_socket(self, vm_id: str) -> Path:
        return self._paths(vm_id).vnc

    def console_log(self, vm_id: str) -> Path:
        return self._paths(vm_id).console_log

    def known_run_dirs(self) -> list[str]:
        return sorted(p.name for p in self.vms_dir.iterdir() if p.is_dir())

    def set_exit_handler(self, handler: ExitHandler) -> None:
        self._on_exit = handler

    # -- disks -------------------------------------------------------------------------------
    async def prepare_disk(self, vm_id: str, media: BootMedia, size_gb: int) -> None:
        """Create the run directory and the VM's disk. The disk is written under a temporary
        name and renamed when complete, so `disk.qcow2` existing means a whole disk (start-up
        reconciliation relies on it). On failure nothing of the VM is left on the host."""
        paths = self._paths(vm_id)
        try:
            paths.run_dir.mkdir(mode=0o700, parents=True, exist_ok=False)
        except OSError as exc:
            problem = storage_problem(exc)
            if problem is not None:
                raise problem from None
            raise
        partial = paths.run_dir / "disk.qcow2.part"
        try:
            if media.base_disk is not None:
                assert media.base_format is not None
                await self.img.create_overlay(partial, media.base_disk, media.base_format, size_gb * GIB)
            else:
                await self.img.create_blank(partial, size_gb * GIB)
            partial.replace(paths.disk)
        except BaseException as exc:
            shutil.rmtree(paths.run_dir, ignore_errors=True)
            problem = storage_problem(exc)
            if problem is not None:
                raise problem from None  # OSError and qemu-img's text would name host paths
            raise

    def has_disk(self, vm_id: str) -> bool:
        return self._paths(vm_id).disk.exists()

    async def grow_disk(self, vm_id: str, size_gb: int) -> None:
        await self.img.grow(self._paths(vm_id).disk, size_gb * GIB)

    async def destroy(self, vm_id: str) -> None:
        if vm_id in self._instances:
            raise InvalidStateError("The VM's process is still running", current="running")
        await asyncio.to_thread(shutil.rmtree, self._paths(vm_id).run_dir, True)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, spec: VMSpec) -> int:
        paths = self._paths(spec.vm_id)
        if not paths.disk.exists():
            raise DriverError("The VM's disk is missing")
        stray = read_pidfile(paths.pidfile)
        if stray is not None and is_qemu_process(stray, paths.run_dir):
            # Its QEMU outlived a re-attach that failed: adopt it, never run a second one.
            log.warning("VM %s: its QEMU (pid %d) still runs; re-attaching to it", spec.vm_id, stray)
            await self._track(spec.vm_id, stray)
            return stray
        for stale in (paths.qmp, paths.serial, paths.vnc):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        self._rotate_console_log(paths)
        argv = build_argv(spec, paths, binary=self.binary, accel=self.accel)
        old_umask = os.umask(0o077)  # QEMU creates its sockets 0600
        try:
            pid = await spawn_daemonized(argv, paths.pidfile, timeout=60)
        finally:
            os.umask(old_umask)
        try:
            await self._track(spec.vm_id, pid)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            raise
        return pid

    def _rotate_console_log(self, paths: RunPaths) -> None:
        if paths.console_log.exists():
            paths.console_log.replace(paths.console_log.with_suffix(".log.1"))

    async def attach(self, vm_id: str) -> int | None:
        """Re-attach to a VM whose QEMU outlived a server restart; None if it is gone."""
        if vm_id in self._instances:
            return self._instances[vm_id].pid
        paths = self._paths(vm_id)
        pid = read_pidfile(paths.pidfile)
        if pid is None or not is_qemu_process(pid, paths.run_dir):
            return None
        await self._track(vm_id, pid)
        return pid

    async def _track(self, vm_id: str, pid: int) -> None:
        qmp = QMPConnection(vm_id, self.qmp_timeout)
        try:
            process = psutil.Process(pid)
            watcher = ExitWatcher(pid, lambda: self._exited(vm_id))
        except (psutil.Error, OSError) as exc:
            raise DriverError("QEMU exited while it was starting") from exc
        instance = _Instance(vm_id=vm_id, pid=pid, watcher=watcher, qmp=qmp, process=process)
        self._instances[vm_id] = instance
        instance.process.cpu_percent(None)  # start the CPU accounting window
        try:
            await qmp.connect(self._paths(vm_id).qmp, lambda name: self._qmp_event(instance, name))
        except BaseException:
            instance.watcher.close()
            self._instances.pop(vm_id, None)
            raise

    def _qmp_event(self, instance: _Instance, name: str) -> None:
        # On the instance itself, not a lookup by id: the event may be read after the exit.
        if name == "SHUTDOWN":
            instance.guest_shutdown = True

    def _exited(self, vm_id: str) -> None:
        instance = self._instances.pop(vm_id, None)
        if instance is None:
            return
        if instance.expect_exit or instance.guest_shutdown:
            self._report_exit(instance)  # at once: a stop/restart waiting on it relies on that
            self._spawn(instance.qmp.close())
            return
        # Not asked for, as far as we know yet: the guest's SHUTDOWN event may still be on its way
        # through the QMP socket (a busy loop sees the exit and the event at the same time).
        self._spawn(self._report_after_events(instance))

    async def _report_after_events(self, instance: _Instance) -> None:
        await instance.qmp.drain_events(QMP_DRAIN_SECONDS)
        await instance.qmp.close()
        self._report_exit(instance)

    def _report_exit(self, instance: _Instance) -> None:
        clean = instance.expect_exit or instance.guest_shutdown
        reason = "powered off" if clean else "the QEMU process exited unexpectedly"
        log.info("VM %s process %d ended (%s)", instance.vm_id, instance.pid, reason)
        self._on_exit(instance.vm_id, clean, reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def is_running(self, vm_id: str) -> bool:
        return vm_id in self._instances

    def _instance(self, vm_id: str) -> _Instance:
        instance = self._instances.get(vm_id)
        if instance is None:
            raise InvalidStateError("The VM is not running", code="VM_NOT_RUNNING", current="stopped")
        return instance

    async def powerdown(self, vm_id: str) -> None:
        instance = self._instance(vm_id)
        instance.expect_exit = True
        try:
            # A paused guest cannot see the power button: it would sit out the whole stop
            # timeout and then be killed. Let it run so that it can shut down cleanly.
            if (await instance.qmp.execute("query-status"))["status"] == "paused":
                await instance.qmp.execute("cont")
            await instance.qmp.execute("system_powerdown")
        except BaseException:
            # Not asked after all (a hung QEMU times out): a later death is a crash again.
            instance.expect_exit = False
            raise

    async def kill(self, vm_id: str) -> None:
        instance = self._instances.get(vm_id)
        if instance is None:
            return
        instance.expect_exit = True
        instance.watcher.kill()
        await instance.watcher.wait(10)

    async def wait_exit(self, vm_id: str, timeout: float) -> bool:
        instance = self._instances.get(vm_id)
        if instance is None:
            return True
        return await instance.watcher.wait(timeout)

    async def _change(self, vm_id: str, command: str) -> None:
        """A state-changing command, sent only once QEMU has answered a harmless query: a command
        that times out is still queued in the socket and would run when a hung QEMU wakes up,
        behind the back of a caller that was told it failed."""
        qmp = self._instance(vm_id).qmp
        await qmp.execute("query-status")
        await qmp.execute(command)

    async def pause(self, vm_id: str) -> None:
        await self._change(vm_id, "stop")

    async def resume(self, vm_id: str) -> None:
        await self._change(vm_id, "cont")

    async def reset(self, vm_id: str) -> None:
        await self._change(vm_id, "system_reset")

    async def query_status(self, vm_id: str) -> str:
        if vm_id not in self._instances:
            return "shutdown"
        result = await self._instance(vm_id).qmp.execute("query-status")
        return str(result["status"])

    async def stats(self, vm_id: str) -> VMStats:
        instance = self._instance(vm_id)
        blockstats = await instance.qmp.execute("query-blockstats")
        read = sum(int(dev["stats"]["rd_bytes"]) for dev in blockstats)
        written = sum(int(dev["stats"]["wr_bytes"]) for dev in blockstats)
        try:
            cpu = instance.process.cpu_percent(None)
            rss = instance.process.memory_info().rss
            uptime = time.time() - instance.process.create_time()
        except psutil.Error as exc:
            raise DriverError("The VM's process vanished") from exc
        return VMStats(
            cpu_percent=cpu,
            memory_used_mb=round(rss / 1024**2, 1),
            disk_read_bytes=read,
            disk_write_bytes=written,
            # User-mode networking keeps no byte counters that QMP can read.
            net_rx_bytes=None,
            net_tx_bytes=None,
            uptime_seconds=round(uptime, 1),
        )

    async def close(self) -> None:
        """Detach from every VM without stopping it: QEMU outlives the server."""
        for task in list(self._tasks):  # an exit not yet reported is found again by reconcile()
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for instance in list(self._instances.values()):
            instance.watcher.close()
            await instance.qmp.close()
        self._instances.clear()
