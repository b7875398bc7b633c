"""One passt process per VM: its command line (pure), its launch, finding it again, stopping it.

passt speaks to QEMU over a socket pair made here (`--fd`), so there is no socket file to race
for, and passt quits by itself when QEMU's end closes: when the VM ends, is killed, or fails to
start. It daemonizes (its own session, like QEMU's `-daemonize`), so it outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from voidvm_server.drivers.qemu.process import read_pidfile, runs_with_argument
from voidvm_server.errors import DriverError, HypervisorTimeoutError

# What the guest is leased: the addresses QEMU's user-mode network uses (domain.models.GUEST_IP).
GUEST_ADDRESS, GUEST_PREFIX, GUEST_GATEWAY = "10.0.2.15", 24, "10.0.2.2"
LAUNCH_TIMEOUT = 20.0
# Where scripts/build-passt.sh installs the passt VoidVM runs: Debian 12's own corrupts the TCP
# streams of slow guests (data sent again as new, the peer's FIN lost).
BUILT_PASST = Path("/usr/local/libexec/voidvm/passt")
# passt's own words when the namespace has no interface with a default route (an offline host).
NO_UPLINK = "External interface not usable"
# Lines of passt's stderr that say nothing to a VM's owner: syslog trouble, and the note that the
# build has no AVX2 twin (VoidVM builds the plain one, scripts/build-passt.sh).
_NOISE = ("Failed to send", "Can't run AVX2 build")


class PasstError(DriverError):
    """passt did not start; `no_uplink` when there is no network to connect the guest to."""

    def __init__(self, message: str, *, details: str, no_uplink: bool = False) -> None:
        super().__init__(message, details=details)
        self.no_uplink = no_uplink


@dataclass(frozen=True)
class PasstFiles:
    run_dir: Path

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "passt.pid"

    @property
    def log(self) -> Path:
        return self.run_dir / "passt.log"

    @property
    def launch_errors(self) -> Path:
        return self.run_dir / "passt-launch.err"


def default_passt() -> str:
    return str(BUILT_PASST) if BUILT_PASST.is_file() else "passt"


def passt_argv(
    files: PasstFiles,
    *,
    binary: str,
    fd: int,
    ssh_port: int | None,
    runas: str | None,
    netns: str | None,
) -> list[str]:
    """passt opens its pidfile and log while still root (before it drops to `runas`) and closes
    every other inherited descriptor, so both are paths in the root-owned run directory."""
    argv = ["ip", "netns", "exec", netns] if netns is not None else []
    argv += [
        binary,
        "--fd", str(fd),
        "--pid", str(files.pidfile),
        "--log-file", str(files.log),
        "--quiet",
        "--no-map-gw",  # the gateway address is a machine outside, never this host's loopback
        "--address", GUEST_ADDRESS,
        "--netmask", str(GUEST_PREFIX),
        "--gateway", GUEST_GATEWAY,
        "--udp-ports", "none",
    ]  # fmt: skip
    if ssh_port is not None:
        argv += ["--tcp-ports", f"127.0.0.1/{ssh_port}:22"]
    if runas is not None:
        argv += ["--runas", runas]
    return argv


def is_passt_process(pid: int, files: PasstFiles) -> bool:
    """True when `pid` is alive and is the passt of this run directory (not a reused pid)."""
    return runs_with_argument(pid, files.log)


class PasstProcess:
    """A running passt, held by a pidfd: a signal sent later can never reach a reused pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = os.pidfd_open(pid)

    def kill(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._fd, signal.SIGKILL)

    async def wait_gone(self, timeout: float) -> bool:
        """True once the process has ended (its pidfd turns readable) within `timeout` s: its
        sockets, the SSH forward's among them, are closed by then."""
        if self._fd is None:
            return True
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()
        loop.add_reader(self._fd, gone.set)
        try:
            async with asyncio.timeout(timeout):
                await gone.wait()
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self._fd)
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def find_passt(files: PasstFiles) -> PasstProcess | None:
    pid = read_pidfile(files.pidfile)
    if pid is None or not is_passt_process(pid, files):
        return None
    try:
        return PasstProcess(pid)
    except ProcessLookupError:
        return None


async def launch_passt(
    files: PasstFiles,
    passt_end: socket.socket,
    *,
    binary: str,
    ssh_port: int | None,
    runas: tuple[str, int, int] | None,
    netns: str | None,
) -> PasstProcess:
    """Start passt on its end of the socket pair it shares with QEMU (the caller closes it once
    this returns: passt holds its own copy). `runas` is (user, uid, gid) when passt is to drop to
    that user."""
    return await _spawn(files, binary, passt_end, ssh_port, runas, netns)


async def _spawn(
    files: PasstFiles,
    binary: str,
    sock: socket.socket,
    ssh_port: int | None,
    runas: tuple[str, int, int] | None,
    netns: str | None,
) -> PasstProcess:
    files.pidfile.unlink(missing_ok=True)  # a pid read before passt writes it is never a stale one
    try:
        argv = passt_argv(files, binary=binary, fd=sock.fileno(), ssh_port=ssh_port,
                          runas=runas[0] if runas else None, netns=netns)  # fmt: skip
        # stderr to a file, as for QEMU: the daemon may hold a pipe's end long after the launch.
        with files.launch_errors.open("wb") as errors:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=errors,
                pass_fds=(sock.fileno(),),
            )
    except FileNotFoundError as exc:
        raise DriverError("The guest network (passt) could not be started", details=exc.strerror) from exc
    try:
        async with asyncio.timeout(LAUNCH_TIMEOUT):
            returncode = await proc.wait()
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        _kill_from_pidfile(files)
        if isinstance(exc, TimeoutError):
            raise HypervisorTimeoutError("The guest network (passt) did not finish starting") from None
        raise
    if returncode != 0:
        _kill_from_pidfile(files)
        message = _last_lines(files.launch_errors)
        raise PasstError("The guest network (passt) failed to start", details=message,
                         no_uplink=NO_UPLINK in message)  # fmt: skip
    found = find_passt(files)
    if found is None:
        raise DriverError("The guest network (passt) started but left no process behind")
    return found


def _kill_from_pidfile(files: PasstFiles) -> None:
    process = find_passt(files)
    if process is not None:
        process.kill()
        process.close()


def _last_lines(path: Path) -> str:
    """passt's complaint for the VM's owner: without syslog noise or the run directory's path."""
    lines = [line for line in path.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith(_NOISE)]  # fmt: skip
    return "; ".join(lines)[-500:].replace(str(path.parent) + "/", "")
