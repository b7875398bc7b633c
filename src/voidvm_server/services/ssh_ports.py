"""SSH ports that stay: a VM keeps the host port of its first start for good.

The port stays in the VM's row while it is stopped (or in error), so no other VM is given it, and
is taken again at every start. Only when another process holds it by then does the VM get a new
one; the claim then says so (`note`) and a `vm.port-changed` system event is published. A VM whose
image serves no SSH gets no port at all.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from voidvm_server.domain.models import VM, Image
from voidvm_server.errors import DriverError
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import VMRepository
from voidvm_server.services import context
from voidvm_server.services.event_log import EventLog
from voidvm_server.services.vm_locks import VMLock

__all__ = ["PortClaim", "SshPorts", "free_loopback_port", "port_is_free"]

log = logging.getLogger(__name__)
NEW_PORT_TRIES = 50


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether QEMU could listen on 127.0.0.1:`port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As QEMU and passt do: the VM's own connections left in TIME_WAIT do not hold the port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class PortClaim:
    """The SSH port a start forwards (None: the image serves no SSH), and the one it replaces."""

    port: int | None
    moved_from: int | None = None

    @property
    def note(self) -> str | None:
        if self.moved_from is None:
            return None
        return (
            f"the VM's SSH port {self.moved_from} was held by another process, "
            f"so SSH is now forwarded from port {self.port}"
        )


class SshPorts:
    """Hands out SSH ports; one claim at a time on the host (`lock`: the API workers share it),
    so two starts never pick the same new port."""

    def __init__(self, db: Database, events: EventLog, lock: VMLock) -> None:
        self.db = db
        self.events = events
        self._lock = lock

    @asynccontextmanager
    async def claim(self, vm: VM, image: Image) -> AsyncIterator[PortClaim]:
        """The port `vm` forwards at this start. Record it in the VM's row inside the block: the
        next claim waits for that. A moved port is announced once the block has run."""
        async with self._lock:
            claim = await self._decide(vm, image)
            yield claim
        if claim.moved_from is not None:
            await self._announce(vm, claim)

    async def _decide(self, vm: VM, image: Image) -> PortClaim:
        if not image.serves_ssh:
            return PortClaim(None)
        if vm.ssh_port is not None and port_is_free(vm.ssh_port):
            return PortClaim(vm.ssh_port)
        async with self.db.reading() as s:
            kept = await VMRepository(s).ssh_ports()
        return PortClaim(self._new_port(kept), moved_from=vm.ssh_port)

    @staticmethod
    def _new_port(kept: dict[int, str]) -> int:
        for _ in range(NEW_PORT_TRIES):
            port = free_loopback_port()
            if port not in kept:  # free now, but kept for a stopped VM
                return port
        raise DriverError("No free host port for the VM's SSH forward")

    async def _announce(self, vm: VM, claim: PortClaim) -> None:
        log.warning("VM %s: SSH port %s is taken; forwarding from %s", vm.id, claim.moved_from, claim.port)
        await self.events.publish(
            "system-event",
            {
                "event": "vm.port-changed",
                "vmId": vm.id,
                "userId": vm.owner_id,
                "actor": context.user_name.get(),
                "message": f"VM {vm.id}: {claim.note}",
                "level": "warning",
                "ports": {"ssh": claim.port},
                "previousPorts": {"ssh": claim.moved_from},
            },
            vm_id=vm.id,
            owner_id=vm.owner_id,
        )
