"""`voidvm-server agent`: the host agent as a process of its own.

It builds the QEMU driver, takes back every VM whose QEMU outlived an earlier agent (QEMU never
depends on it), and serves the HostAgent port on a 0600 unix socket until SIGTERM or SIGINT. On
the way out it lets go of the VMs without stopping them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from voidvm_server.agent.host import build_local_agent
from voidvm_server.agent.local import LocalAgent
from voidvm_server.agent.server import AgentServer
from voidvm_server.config import Settings
from voidvm_server.data_dir import prepare_data_dir
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.errors import VoidVMError

log = logging.getLogger(__name__)


async def _take_back(local: LocalAgent, vm_id: str) -> bool:
    """Re-attach a VM whose QEMU still runs; False when there is none (or it cannot be reached:
    the API's reconciliation then records the VM's state)."""
    try:
        return await local.attach(vm_id) is not None
    except VoidVMError as exc:
        log.warning("VM %s: could not take it back: %s", vm_id, exc.message)
        return False


def agent_socket(settings: Settings) -> Path:
    return settings.agent_socket or settings.data_dir / "agent.sock"


async def run_agent(settings: Settings) -> None:
    prepare_data_dir(settings.data_dir)
    local = await build_local_agent(settings, await QemuImg(settings.qemu_img_binary).version())
    adopted = [vm_id for vm_id in await local.known_vms() if await _take_back(local, vm_id)]
    server = AgentServer(local, agent_socket(settings))
    await server.start()
    log.info("Host agent ready on %s (accelerator: %s; %d running VMs taken back)",
             server.path, local.accel, len(adopted))  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        await local.close()  # detaches: the VMs keep running
        log.info("Host agent stopped; its VMs keep running")
