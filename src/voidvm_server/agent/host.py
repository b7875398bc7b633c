"""What runs this host's VMs, built from the settings: the QEMU driver and its guest network,
and the HostAgent the API uses (in this process, or the agent process's socket)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from voidvm_server.agent.local import LocalAgent
from voidvm_server.agent.port import HostAgent
from voidvm_server.agent.remote import RemoteAgent
from voidvm_server.config import Settings
from voidvm_server.drivers.base import Driver
from voidvm_server.drivers.console_log import ConsoleLimits
from voidvm_server.drivers.qemu.driver import QemuDriver
from voidvm_server.drivers.qemu.guest_network import GuestNetwork
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.drivers.qemu.probe import choose_accel

DriverFactory = Callable[[Settings, Path], Driver]


def guest_network(settings: Settings) -> GuestNetwork:
    return GuestNetwork(
        passt_binary=settings.passt_binary,
        netns=settings.guest_netns,
        user=settings.guest_net_user,
        allow_unfenced=settings.guest_network_unfenced,
    )


async def build_driver(settings: Settings, qemu_version: str) -> Driver:
    accel = await choose_accel(
        settings.accel, settings.qemu_binary, qemu_version, settings.resolved_cache_dir
    )
    network = guest_network(settings)
    await network.prepare()  # before any VM starts or is re-attached
    return QemuDriver(
        settings.data_dir,
        accel=accel,
        binary=settings.qemu_binary,
        qemu_img=QemuImg(settings.qemu_img_binary),
        qmp_timeout=settings.qmp_timeout_seconds,
        console=ConsoleLimits(settings.console_log_max_bytes, settings.console_replay_bytes),
        network=network,
    )


async def build_local_agent(
    settings: Settings, qemu_version: str, factory: DriverFactory | None = None
) -> LocalAgent:
    driver = factory(settings, settings.data_dir) if factory else await build_driver(settings, qemu_version)
    return LocalAgent(driver, images_root=settings.data_dir / "images")


async def build_agent(settings: Settings, qemu_version: str, factory: DriverFactory | None) -> HostAgent:
    """The agent process's socket when one is configured (VOIDVM_AGENT_SOCKET), else the host
    served in this process."""
    if settings.agent_socket is not None:
        remote = RemoteAgent(settings.agent_socket)
        await remote.connect()
        return remote
    return await build_local_agent(settings, qemu_version, factory)
