"""QemuDriver: the real hypervisor driver. One detached qemu-system process per VM.

Run directory per VM (`<data>/vms/<vm-id>/`): disk.qcow2, qemu.pid, qmp.sock, serial.sock,
vnc.sock, console.log (+ console.log.1, console.previous.log), and passt.pid/passt.log of its
network (guest_network.py). Sockets are unix sockets made 0600; nothing listens on TCP except the
optional loopback SSH forward (passt's). The driver holds each running VM's serial console
(drivers/qemu/console.py) and writes its bounded log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from voidvm_server.drivers.base import (
    DISK_FULL_REASON,
    BootMedia,
    ConsoleHandler,
    ExitHandler,
    PauseHandler,
    VMSpec,
    VMStats,
)
from voidvm_server.drivers.console_log import ConsoleLimits, RotatingLog, start_new_log
from voidvm_server.drivers.qemu.cmdline import RunPaths, build_argv
from voidvm_server.drivers.qemu.console import SerialRecorder
from voidvm_server.drivers.qemu.guest_network import GuestNetwork
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.drivers.qemu.passt import PasstFiles, PasstProcess, find_passt
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
PASST_END_SECONDS = 2.0  # how long a killed passt may take to end (and free its SSH port)
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


async def _discard(pid: int, paths: RunPaths, patience: float = 10.0) -> None:
    """Kill a QEMU that was started but never let run, and wait until it has exited (its pidfd
    says so: it is no child of ours), so that a second one can take its disk, sockets and pidfile.
    One that will not go is an error: never two QEMUs on one disk."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = None  # gone already
    try:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        if pidfd is not None:
            loop = asyncio.get_running_loop()
            exited = asyncio.Event()
            loop.add_reader(pidfd, exited.set)
            try:
                async with asyncio.timeout(patience):
                    await exited.wait()
            except TimeoutError:
                raise DriverError("QEMU could not be stopped to start it on the restricted network") from None
            finally:
                loop.remove_reader(pidfd)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    for stale in (paths.qmp, paths.serial, paths.vnc, paths.pidfile):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def _owner_only(*sockets: Path) -> None:
    """QEMU's -daemonize sets its umask to 027, so its sockets come out 0750 (in a 0700 run
    directory, so no one else could reach them anyway): make them 0600 like every other file."""
    for path in sockets:
        with contextlib.suppress(FileNotFoundError):
            path.chmod(0o600)


@dataclass
class _Instance:
    vm_id: str
    pid: int
    watcher: ExitWatcher
    qmp: QMPConnection
    process: psutil.Process
    passt: PasstProcess | None = None
    expect_exit: bool = False
    guest_shutdown: bool = False
    console: SerialRecorder | None = None
    stop_reason: str | None = None  # QEMU said it is about to pause the guest on its own, and why


class QemuDriver:
    def __init__(
        self,
        data_dir: Path,
        *,
        accel: str,
        binary: str = "qemu-system-x86_64",
        qemu_img: QemuImg | None = None,
        qmp_timeout: float = 10.0,
        console: ConsoleLimits | None = None,
        network: GuestNetwork | None = None,
    ) -> None:
        self.vms_dir = data_dir / "vms"
        self.console_limits = console or ConsoleLimits()
        self.vms_dir.mkdir(parents=True, exist_ok=True)
        self.accel = accel
        self.binary = binary
        self.img = qemu_img or QemuImg()
        self.qmp_timeout = qmp_timeout
        self.network = network or GuestNetwork()
        self._instances: dict[str, _Instance] = {}
        self._on_exit: ExitHandler = lambda vm_id, pid, clean, reason: None
        self._on_pause: PauseHandler = lambda vm_id, reason: None
        self._on_console: ConsoleHandler = lambda vm_id, data: None
        self._tasks: set[asyncio.Task[None]] = set()
        self._console_endings: dict[str, asyncio.Task[None]] = {}  # consoles of exited QEMUs
        self._passt_endings: dict[str, asyncio.Task[None]] = {}  # passts of exited QEMUs

    # -- paths -------------------------------------------------------------------------------
    def _paths(self, vm_id: str) -> RunPaths:
        if "/" in vm_id or vm_id in {"", ".", ".."}:
            raise ValueError("invalid VM id")
        return RunPaths(self.vms_dir / vm_id)

    def run_dir(self, vm_id: str) -> Path:
        return self._paths(vm_id).run_dir

    def vnc_socket(self, vm_id: str) -> Path:
        return self._paths(vm_id).vnc

    def console_log(self, vm_id: str) -> Path:
        return self._paths(vm_id).console_log

    def known_run_dirs(self) -> list[str]:
        return sorted(p.name for p in self.vms_dir.iterdir() if p.is_dir())

    def set_exit_handler(self, handler: ExitHandler) -> None:
        self._on_exit = handler

    def set_pause_handler(self, handler: PauseHandler) -> None:
        self._on_pause = handler

    def set_console_handler(self, handler: ConsoleHandler) -> None:
        self._on_console = handler

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

    def disk_allocated_bytes(self, vm_id: str) -> int | None:
        """What the VM's own disk file really takes on the host (its base image not included)."""
        try:
            return self._paths(vm_id).disk.stat().st_blocks * 512
        except FileNotFoundError:
            return None

    async def destroy(self, vm_id: str) -> None:
        if vm_id in self._instances:
            raise InvalidStateError("The VM's process is still running", current="running")
        ending = self._console_endings.pop(vm_id, None)
        if ending is not None:
            await asyncio.gather(ending, return_exceptions=True)
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
            await self._adopt(spec.vm_id, stray, paths)
            return stray
        for stale in (paths.qmp, paths.serial, paths.vnc):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        await self._new_console_log(spec.vm_id, paths)
        # passt is launched beside QEMU, which starts paused (-S): its guest runs only once both
        # are up, and a QEMU started for a passt that then finds no uplink has run nothing.
        link = await self.network.connect(spec.vm_id, paths.run_dir, spec.ssh_port)
        pid: int | None = None
        try:
            pid = await self._launch_qemu(spec, paths, link.qemu_end)
            link.close_qemu_end()  # QEMU holds its own copy now
            if not await link.settle():  # no uplink: on QEMU's restricted network instead
                await _discard(pid, paths)
                pid = None
                pid = await self._launch_qemu(spec, paths, None)
        except BaseException:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            link.abandon()
            raise
        _owner_only(paths.qmp, paths.serial, paths.vnc)
        try:
            await self._track(spec.vm_id, pid, link.passt)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            link.abandon()
            raise
        return pid

    async def _launch_qemu(self, spec: VMSpec, paths: RunPaths, net: socket.socket | None) -> int:
        net_fd = net.fileno() if net is not None else None
        argv = build_argv(spec, paths, binary=self.binary, accel=self.accel, net_fd=net_fd)
        old_umask = os.umask(0o077)
        try:
            return await spawn_daemonized(argv, paths.pidfile, timeout=60,
                                          pass_fds=() if net_fd is None else (net_fd,))  # fmt: skip
        finally:
            os.umask(old_umask)

    async def _new_console_log(self, vm_id: str, paths: RunPaths) -> None:
        ending = self._console_endings.pop(vm_id, None)
        if ending is not None:  # the last run's final output goes to its own log first
            await asyncio.gather(ending, return_exceptions=True)
        start_new_log(paths.console_log)

    async def attach(self, vm_id: str) -> int | None:
        """Re-attach to a VM whose QEMU outlived a server restart; None if it is gone."""
        if vm_id in self._instances:
            return self._instances[vm_id].pid
        paths = self._paths(vm_id)
        pid = read_pidfile(paths.pidfile)
        if pid is None or not is_qemu_process(pid, paths.run_dir):
            return None
        await self._adopt(vm_id, pid, paths)
        return pid

    async def _adopt(self, vm_id: str, pid: int, paths: RunPaths) -> None:
        """Track a QEMU started earlier (by this server or one before it), and its passt."""
        files = PasstFiles(paths.run_dir)
        passt = find_passt(files)
        if passt is None and files.pidfile.exists():
            log.warning("VM %s: its passt has ended; the guest has no network until it restarts", vm_id)
        try:
            await self._track(vm_id, pid, passt)
        except BaseException:
            if passt is not None:
                passt.close()
            raise

    async def _track(self, vm_id: str, pid: int, passt: PasstProcess | None) -> None:
        qmp = QMPConnection(vm_id, self.qmp_timeout)
        try:
            process = psutil.Process(pid)
            watcher = ExitWatcher(pid, lambda: self._exited(vm_id))
        except (psutil.Error, OSError) as exc:
            raise DriverError("QEMU exited while it was starting") from exc
        instance = _Instance(vm_id=vm_id, pid=pid, watcher=watcher, qmp=qmp, process=process,
                             passt=passt)  # fmt: skip
        self._instances[vm_id] = instance
        instance.process.cpu_percent(None)  # start the CPU accounting window
        try:
            await qmp.connect(self._paths(vm_id).qmp, partial(self._qmp_event, instance))
            await self._record_console(instance)
        except BaseException:
            if instance.console is not None:
                await instance.console.close()
            instance.watcher.close()
            await qmp.close()
            self._instances.pop(vm_id, None)
            raise

    async def _record_console(self, instance: _Instance) -> None:
        """Hold the VM's serial console; a QEMU this driver started waits in `prelaunch` (-S)
        for it, and only then runs the guest."""
        paths = self._paths(instance.vm_id)
        try:  # a VM started by an older VoidVM has QEMU write its (unbounded) log itself
            qemu_logs = any("logfile=" in arg for arg in instance.process.cmdline())
        except psutil.Error as exc:
            raise DriverError("QEMU exited while it was starting") from exc
        if qemu_logs:
            log.warning("VM %s: QEMU writes its console log itself until the VM restarts", instance.vm_id)
        instance.console = SerialRecorder(
            instance.vm_id,
            paths.serial,
            None if qemu_logs else RotatingLog(paths.console_log, self.console_limits.log_max_bytes),
            replay_bytes=self.console_limits.replay_bytes,
            on_output=lambda data: self._on_console(instance.vm_id, data),
            timeout=self.qmp_timeout,
        )
        resumed = paths.console_log.exists()
        await instance.console.open(paths.console_log if resumed else None)
        if (await instance.qmp.execute("query-status"))["status"] == "prelaunch":
            await instance.qmp.execute("cont")

    def _qmp_event(self, instance: _Instance, name: str, data: dict[str, Any]) -> None:
        # On the instance itself, not a lookup by id: the event may be read after the exit.
        if name == "SHUTDOWN":
            instance.guest_shutdown = True
        elif name == "BLOCK_IO_ERROR" and data.get("action") == "stop":
            failure = str(data.get("reason") or "an I/O error")
            instance.stop_reason = (
                DISK_FULL_REASON if data.get("nospace") else f"a disk write failed: {failure}"
            )
        elif name == "STOP" and instance.stop_reason is not None:
            reason, instance.stop_reason = instance.stop_reason, None
            if self._instances.get(instance.vm_id) is instance:
                self._on_pause(instance.vm_id, reason)
        elif name == "RESUME":
            instance.stop_reason = None

    def _exited(self, vm_id: str) -> None:
        instance = self._instances.pop(vm_id, None)
        if instance is None:
            return
        if instance.passt is not None:  # it quits on its own at QEMU's end; make sure of it
            instance.passt.kill()
            self._passt_endings[vm_id] = self._spawn(self._end_passt(instance.passt))
        if instance.console is not None:
            self._console_endings[vm_id] = self._spawn(instance.console.finish(QMP_DRAIN_SECONDS))
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
        self._on_exit(instance.vm_id, instance.pid, clean, reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        if await instance.watcher.wait(10):
            await self._passt_ended(vm_id)

    async def wait_exit(self, vm_id: str, timeout: float) -> bool:
        instance = self._instances.get(vm_id)
        if instance is not None and not await instance.watcher.wait(timeout):
            return False
        await self._passt_ended(vm_id)
        return True

    async def _end_passt(self, passt: PasstProcess) -> None:
        try:
            if not await passt.wait_gone(PASST_END_SECONDS):
                log.warning("passt %d has not ended %gs after its SIGKILL", passt.pid, PASST_END_SECONDS)
        finally:
            passt.close()

    async def _passt_ended(self, vm_id: str) -> None:
        """Once an ended VM's passt is gone too: a start right after (a restart) finds the VM's
        SSH port free again."""
        ending = self._passt_endings.pop(vm_id, None)
        if ending is not None:
            await asyncio.gather(ending, return_exceptions=True)

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

    def console_recent(self, vm_id: str) -> bytes:
        instance = self._instances.get(vm_id)
        return instance.console.recent() if instance and instance.console else b""

    async def console_write(self, vm_id: str, data: bytes) -> None:
        console = self._instance(vm_id).console
        if console is None:
            raise DriverError("The VM's serial console is not reachable")
        await console.write(data)

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
            if instance.passt is not None:
                instance.passt.close()  # no signal: passt lives on with its VM
            if instance.console is not None:
                await instance.console.close()
            await instance.qmp.close()
        self._instances.clear()
