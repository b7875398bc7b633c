"""How each VM's network card reaches the network, and how far its guest may reach.

Normally through its own passt (passt.py): outbound traffic leaves from this host's sockets as
any program's would, the SSH forward is a loopback port of passt's. When the server is root,
passt runs as a dedicated user (`guest_net_user`, created if missing) that VoidVM's nftables
table (guest_firewall.py) forbids to reach loopback, link-local and this host's own addresses,
inside the network namespace `guest_netns` if one is set.

When passt is not installed, or finds no network to connect the guest to (no default route, as
on an offline host), the VM gets QEMU's user-mode network with restrict=on instead: the SSH
forward works, the guest reaches neither this host nor anything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import socket
from pathlib import Path

from voidvm_server.drivers.qemu import guest_firewall
from voidvm_server.drivers.qemu.passt import (
    BUILT_PASST,
    PasstError,
    PasstFiles,
    PasstProcess,
    default_passt,
    launch_passt,
)
from voidvm_server.drivers.qemu.process import run_tool
from voidvm_server.errors import DriverError

log = logging.getLogger(__name__)
NETNS_DIR = Path("/run/netns")


class GuestLink:
    """A VM's network as its start makes it: QEMU's end of the socket pair it shares with passt,
    while passt is launched beside QEMU (`settle` waits for it), or neither (restricted)."""

    def __init__(
        self,
        pair: tuple[socket.socket, socket.socket] | None = None,
        launch: asyncio.Task[PasstProcess | None] | None = None,
    ) -> None:
        self.qemu_end: socket.socket | None = pair[0] if pair is not None else None
        self._passt_end: socket.socket | None = pair[1] if pair is not None else None
        self.passt: PasstProcess | None = None
        self._launch = launch

    async def settle(self) -> bool:
        """Wait for passt. False when it found no network to connect the guest to: the QEMU
        given `qemu_end` must then be started again on the restricted network."""
        if self._launch is None:
            return True
        try:
            self.passt = await self._launch
        finally:
            self._launch = None
            self._close_passt_end()  # passt holds its own copy now, or is not there
        if self.passt is None:
            self.close_qemu_end()
            return False
        return True

    def close_qemu_end(self) -> None:
        if self.qemu_end is not None:
            self.qemu_end.close()
            self.qemu_end = None

    def _close_passt_end(self) -> None:
        if self._passt_end is not None:
            self._passt_end.close()
            self._passt_end = None

    def abandon(self) -> None:
        """The VM did not start: passt must not outlive it (it would quit at EOF anyway). A
        launch under way is cancelled, which kills what it started."""
        self.close_qemu_end()
        self._close_passt_end()  # a launch not yet begun then fails on it, or is cancelled
        if self._launch is not None:
            self._launch.cancel()
            self._launch.add_done_callback(_kill_launched)
            self._launch = None
        if self.passt is not None:
            self.passt.kill()
            self.passt.close()


def _kill_launched(launch: asyncio.Task[PasstProcess | None]) -> None:
    if launch.cancelled() or launch.exception() is not None:
        return
    passt = launch.result()
    if passt is not None:
        passt.kill()
        passt.close()


class GuestNetwork:
    def __init__(
        self,
        *,
        passt_binary: str | None = None,
        netns: str | None = None,
        user: str = "voidvm-net",
        allow_unfenced: bool = False,
    ) -> None:
        self.passt_binary = passt_binary or default_passt()
        self.netns = netns
        self.user = user
        # Without the fence (not root, no nft) guests get the restricted network, unless the
        # operator accepts that they can reach this host's loopback services.
        self.allow_unfenced = allow_unfenced
        self._runas: tuple[str, int, int] | None = None  # passt's own user, once it exists
        self._fenced = False  # VoidVM's table holds that user in

    # -- what this host offers --------------------------------------------------------------
    def _passt_found(self) -> bool:
        return shutil.which(self.passt_binary) is not None

    def _gap(self) -> str | None:
        """Why guests are not fenced off from this host, or None when they are (or will be)."""
        if os.geteuid() != 0:
            return "the server is not root, so passt cannot run as its own user behind the nftables rule"
        if shutil.which("nft") is None:
            return "nft is not installed (Debian package nftables)"
        return None

    def _where(self) -> str:
        return f" in network namespace '{self.netns}'" if self.netns else ""

    def _netns_missing(self) -> bool:
        return self.netns is not None and not (NETNS_DIR / self.netns).exists()

    def _netns_problem(self) -> str | None:
        """Why VMs cannot start in the configured namespace, if they cannot."""
        if self.netns is None:
            return None
        if os.geteuid() != 0:
            return f"entering network namespace '{self.netns}' (VOIDVM_GUEST_NETNS) needs root"
        if self._netns_missing():
            return f"network namespace '{self.netns}' (VOIDVM_GUEST_NETNS) does not exist"
        return None

    async def describe(self) -> str:
        """One line for `voidvm-server doctor`; changes nothing."""
        if not self._passt_found():
            return "QEMU user-mode, restricted (passt not installed): SSH forward only, no outbound"
        problem = self._netns_problem()
        if problem is not None:
            return f"passt; {problem}: VMs will not start"
        gap = self._gap()
        if gap is not None:
            if not self.allow_unfenced:
                return f"QEMU user-mode, restricted ({gap}): SSH forward only, no outbound"
            return f"passt{self._where()}, NOT isolated from this host's loopback: {gap}"
        installed = await guest_firewall.is_installed(netns=self.netns)
        table = "present" if installed else "installed when the server starts"
        return (f"passt as {self.user}{self._where()}, isolated from this host "
                f"(nftables table inet {guest_firewall.TABLE}: {table}){self._build_note()}")  # fmt: skip

    def _build_note(self) -> str:
        if self.passt_binary == str(BUILT_PASST):
            return ""
        return f"; {self.passt_binary} is not VoidVM's build: run scripts/build-passt.sh as root"

    # -- server start ------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Fence passt's user in, when this host allows it; warn clearly when it does not."""
        if not self._passt_found():
            log.warning("passt is not installed (Debian package passt): VMs get QEMU's restricted "
                        "user-mode network, with the SSH forward but no outbound access")  # fmt: skip
            return
        problem = self._netns_problem()
        if problem is not None:
            log.error("Guest networking: %s; VMs will not start", problem)
        problem = self._gap() or await self._fence()
        if problem is not None:
            if self.allow_unfenced:
                log.warning("SECURITY: guests can reach this host's loopback services through passt: "
                            "%s (see docs/security.md)", problem)  # fmt: skip
            else:
                log.warning("Guests cannot be fenced off from this host (%s): they get QEMU's restricted "
                            "network, SSH forward only (see docs/security.md)", problem)  # fmt: skip
            return
        log.info("Guest networking: passt as %s%s, behind nftables table inet %s",
                 self.user, self._where(), guest_firewall.TABLE)  # fmt: skip

    async def _fence(self) -> str | None:
        """Make passt's user and load the table; what went wrong, or None."""
        try:
            uid, gid = await _ensure_user(self.user)
            self._runas = (self.user, uid, gid)
            if not self._netns_missing():  # else loaded by the first start that finds it
                await guest_firewall.install(uid, netns=self.netns)
        except DriverError as exc:
            return f"{exc.message} ({exc.details})" if exc.details else exc.message
        except OSError as exc:  # `ip` or `nft` vanished
            return str(exc)
        self._fenced = True
        return None

    # -- one VM's start ----------------------------------------------------------------------
    async def connect(self, vm_id: str, run_dir: Path, ssh_port: int | None) -> GuestLink:
        """The checks a guest's network needs, then the link: passt's launch is under way when
        this returns, so that QEMU can start beside it (see `GuestLink.settle`)."""
        if not self._passt_found():
            return GuestLink()
        if self._netns_problem() is not None:
            raise DriverError("The guest network is not available (see the server's log)")
        if self._gap() is not None:
            if not self.allow_unfenced:
                return GuestLink()  # fail closed: no way out rather than a way into this host
        elif not self._fenced:  # root, but loading the table failed so far: try again, or refuse
            problem = await self._fence()
            if problem is not None:
                raise DriverError("The guest network's firewall could not be loaded", details=problem)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        launch = asyncio.create_task(self._launch(vm_id, run_dir, ssh_port, theirs), name=f"passt-{vm_id}")
        return GuestLink((ours, theirs), launch)

    async def _launch(
        self, vm_id: str, run_dir: Path, ssh_port: int | None, passt_end: socket.socket
    ) -> PasstProcess | None:
        """passt for one VM, or None when it finds no uplink (the guest is then restricted)."""
        await self._keep_fence()
        files = PasstFiles(run_dir)
        runas = self._runas or _root_default()
        try:
            return await launch_passt(files, passt_end, binary=self.passt_binary, ssh_port=ssh_port,
                                      runas=runas, netns=self.netns)  # fmt: skip
        except PasstError as exc:
            if not exc.no_uplink:
                raise
            log.warning("VM %s: passt finds no network (no default route%s) to connect it to; it "
                        "gets QEMU's restricted network, SSH forward only", vm_id, self._where())  # fmt: skip
            files.pidfile.unlink(missing_ok=True)  # a re-attach then expects no passt
            return None

    async def _keep_fence(self) -> None:
        """A firewall reload (`nft flush ruleset`) or a re-created namespace drops the table: put it
        back before a guest is let out, or refuse the start."""
        if not self._fenced or await guest_firewall.is_installed(netns=self.netns):
            return
        assert self._runas is not None
        log.warning("nftables table inet %s%s was gone; loading it again", guest_firewall.TABLE,
                    self._where())  # fmt: skip
        try:
            await guest_firewall.install(self._runas[1], netns=self.netns)
        except (DriverError, OSError) as exc:
            raise DriverError("The guest network's firewall could not be restored") from exc


def _root_default() -> tuple[str, int, int] | None:
    """Unfenced, a root server's passt drops to `nobody` (passt's own default): named here so that
    its pidfile can be handed to that user. None when the server is not root."""
    if os.geteuid() != 0:
        return None
    uid, gid = _lookup("nobody") or (65534, 65534)
    return ("nobody", uid, gid)


def _lookup(user: str) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


async def _ensure_user(user: str) -> tuple[int, int]:
    found = _lookup(user)
    if found is not None:
        return found
    log.info("Creating the system user %s for guest networking", user)
    details = ""
    try:
        await run_tool(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        "--comment", "VoidVM guest networking (passt)", user],
                       timeout=30, error=f"Could not create the system user {user}")  # fmt: skip
    except DriverError as exc:
        details = str(exc.details or "")
    except OSError as exc:
        details = str(exc)
    found = _lookup(user)  # made now: by us, or by another server meanwhile
    if found is None:
        raise DriverError(f"Could not create the system user {user}", details=details)
    return found
