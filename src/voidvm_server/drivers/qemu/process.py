"""Spawning detached QEMU processes and watching them end.

QEMU runs with `-daemonize`: the launcher returns once the VM is set up, and the VM's process is
not our child, so it outlives the server. A pidfd tells us the moment it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from voidvm_server.errors import DriverError, HypervisorTimeoutError, HypervisorUnavailableError

log = logging.getLogger(__name__)


async def run_tool(argv: list[str], *, timeout: float, error: str, stdin: bytes | None = None) -> str:
    """Run a helper program (qemu-img, ...) and return its stdout; DriverError if it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise HypervisorTimeoutError(f"{error}: timed out") from exc
    if proc.returncode != 0:
        raise DriverError(error, details=_clean(err.decode(errors="replace")))
    return out.decode(errors="replace")


# The directories of an absolute path ("/var/lib/voidvm/vms/vm-1/"), to be cut down to the file name.
_HOST_DIRS = re.compile(r"(?<![\w.~-])/(?:[^\s'\"/]+/)+")


def _clean(stderr: str) -> str:
    """Keep QEMU's message for the VM's owner, but no host path: not the binary's path prefix,
    not the echo of our own option (`-drive file=/...: `), not the directories of a file name."""
    lines = []
    for line in stderr.strip().splitlines():
        line = line.split(": ", 1)[-1]
        if line.startswith("-") and ": " in line:
            line = line.split(": ", 1)[1]
        lines.append(_HOST_DIRS.sub("", line))
    return "; ".join(lines)[-500:]


async def spawn_daemonized(
    argv: list[str], pidfile: Path, *, timeout: float, pass_fds: tuple[int, ...] = ()
) -> int:
    """Start QEMU with -daemonize and return the pid of the VM process it leaves behind.

    The launcher's stderr goes to a file, not a pipe: the daemon inherits it for a while, and a
    pipe would keep us waiting for an EOF that comes only when the VM ends.
    """
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    errors_path = pidfile.with_name("qemu-launch.err")
    try:
        with errors_path.open("wb") as errors:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=errors,
                pass_fds=pass_fds,
            )
    except FileNotFoundError as exc:
        raise HypervisorUnavailableError("The QEMU binary was not found") from exc
    try:
        async with asyncio.timeout(timeout):
            returncode = await proc.wait()
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        _kill_from_pidfile(pidfile)
        if isinstance(exc, TimeoutError):
            raise HypervisorTimeoutError("QEMU did not finish starting in time") from None
        raise  # a cancel stays a cancel
    if returncode != 0:
        _kill_from_pidfile(pidfile)
        message = _clean(errors_path.read_text(errors="replace"))
        raise DriverError("QEMU failed to start", details=message)
    pid = read_pidfile(pidfile)
    if pid is None:
        raise DriverError("QEMU started but wrote no pidfile")
    return pid


def _kill_from_pidfile(pidfile: Path) -> None:
    """A launch that failed halfway must not leave a VM process behind."""
    pid = read_pidfile(pidfile)
    if pid is not None and is_qemu_process(pid, pidfile.parent):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def read_pidfile(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def runs_with_argument(pid: int, argument: Path) -> bool:
    """True when `pid` is alive and has `argument` on its command line: the process a run
    directory started (its own pidfile or log file named there), not a reused pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(argument).encode() in cmdline


def is_qemu_process(pid: int, run_dir: Path) -> bool:
    """True when `pid` is alive and is the QEMU of this run directory (not a reused pid)."""
    return runs_with_argument(pid, run_dir / "qemu.pid")


class ExitWatcher:
    """Calls `on_exit` once when the process behind `pid` ends (via a pidfd on the event loop)."""

    def __init__(self, pid: int, on_exit: Callable[[], None]) -> None:
        self.pid = pid
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._fd: int | None = os.pidfd_open(pid)
        self._exited = asyncio.Event()
        self._loop.add_reader(self._fd, self._fire)

    def _fire(self) -> None:
        self._close_fd()
        if not self._exited.is_set():
            self._exited.set()
            self._on_exit()

    def _close_fd(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    async def wait(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._exited.wait()
        except TimeoutError:
            return False
        return True

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop watching without killing (the VM keeps running when the server stops)."""
        self._close_fd()
