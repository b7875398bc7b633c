"""passt lives and dies with its VM: across a server restart, a failed start, a firewall reload,
and on a host with no network (the restricted fallback). Namespaces as in test_guest_isolation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.conftest import let_tiny_serve_ssh, make_settings
from tests.integration.conftest import (
    READY_LINE,
    STOP_TIMEOUT,
    action,
    create_vm,
    get_vm,
    passt_pids,
    poll,
    serial_run,
    serve,
    wait_console,
    wait_gone,
)
from tests.integration.netns import exchange_in, isolated_network, missing_reason, nft_in, offline_netns
from voidvm_server.drivers.base import BootMedia, VMSpec
from voidvm_server.drivers.qemu import guest_firewall
from voidvm_server.drivers.qemu.driver import QemuDriver
from voidvm_server.drivers.qemu.guest_network import GuestNetwork
from voidvm_server.drivers.qemu.passt import PasstFiles, is_passt_process
from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE
from voidvm_server.errors import DriverError
from voidvm_server.services.vms import free_loopback_port

pytestmark = pytest.mark.qemu


@pytest.fixture(autouse=True)
def needs_namespaces() -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)


async def stop(driver: QemuDriver, vm_id: str) -> None:
    await driver.kill(vm_id)
    # Let the exit's own clean-up (closing QMP) finish: close() would cancel it half-way.
    await asyncio.gather(*driver._tasks)
    await driver.close()


def tiny_media(tiny: tuple[Path, Path]) -> BootMedia:
    return BootMedia(kernel=tiny[0], initrd=tiny[1], kernel_cmdline=TINY_KERNEL_CMDLINE)


async def test_passt_outlives_a_server_restart_and_the_ssh_forward_still_answers(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    with isolated_network() as net:
        settings = make_settings(tmp_path, guest_netns=net.host, stop_timeout_seconds=STOP_TIMEOUT)
        async with serve(settings, tiny_image) as api:
            token = await api.login()
            await let_tiny_serve_ssh(api.container.db)
            vm_id = (await create_vm(api, token, "survivor"))["id"]
            port = (await action(api, token, vm_id, "start"))["data"]["ports"]["ssh"]
            await wait_console(api, token, vm_id, READY_LINE)
            files = PasstFiles(api.container.agent.driver.run_dir(vm_id))
            passt = int(files.pidfile.read_text())
        # The server is gone; the VM and its network are not.
        assert is_passt_process(passt, files)
        async with serve(settings, None) as api:
            token = await api.login()
            vm = await get_vm(api, token, vm_id)
            assert (vm["status"], vm["ports"]) == ("running", {"ssh": port})
            await serial_run(api, vm_id, "(echo still-here | nc -l -p 22 >/dev/null &); sleep 0.3")
            assert await exchange_in(net.host, "127.0.0.1", port, b"hi\n") == b"still-here\n"
            await action(api, token, vm_id, "stop", force=True)
            await wait_gone(passt, timeout=5)


@pytest.mark.parametrize("qemu_fails", ["at once", "once passt runs"])
async def test_a_start_that_fails_leaves_no_passt_behind(
    tmp_path: Path, tiny_image: tuple[Path, Path], qemu_fails: str
) -> None:
    """passt is launched beside QEMU: a QEMU that fails cancels a launch under way, or ends the
    passt already running."""
    qemu = "/bin/false"
    if qemu_fails == "once passt runs":
        qemu = str(tmp_path / "slow-false")
        Path(qemu).write_text("#!/bin/sh\nsleep 1\nexit 1\n")
        Path(qemu).chmod(0o755)
    with isolated_network() as net:
        driver = QemuDriver(tmp_path, accel="tcg", binary=qemu, network=GuestNetwork(netns=net.host))
        await driver.prepare_disk("vm-doomed", tiny_media(tiny_image), 1)
        spec = VMSpec("vm-doomed", 1, 128, tiny_media(tiny_image), free_loopback_port())
        with pytest.raises(DriverError, match="QEMU failed to start"):
            await driver.start(spec)
        if qemu_fails == "once passt runs":
            assert (driver.run_dir("vm-doomed") / "passt.log").exists()  # passt did run

        async def none_left() -> bool:
            return not passt_pids(str(tmp_path))

        await poll(none_left, timeout=5, what="the failed start's passt to end")


async def test_a_start_puts_back_the_table_a_firewall_reload_dropped(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    with isolated_network() as net:
        network = GuestNetwork(netns=net.host)
        await network.prepare()
        nft_in(net.host, "delete", "table", "inet", guest_firewall.TABLE)  # as `nft flush ruleset` would
        driver = QemuDriver(tmp_path, accel="tcg", network=network)
        await driver.prepare_disk("vm-fenced", tiny_media(tiny_image), 1)
        try:
            await driver.start(VMSpec("vm-fenced", 1, 128, tiny_media(tiny_image), free_loopback_port()))
            assert "goto refuse" in nft_in(net.host, "list", "table", "inet", guest_firewall.TABLE)
        finally:
            await stop(driver, "vm-fenced")


async def test_with_no_network_at_all_the_vm_still_gets_its_passt(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    """The passt VoidVM builds runs without a default route (an offline host): the guest gets its
    lease and SSH forward, and reaches nothing, as there is nothing. (Debian 12's passt refused to
    start there; the driver still falls back to QEMU's restricted network for such a passt.)"""
    with offline_netns() as netns:
        driver = QemuDriver(tmp_path, accel="tcg", network=GuestNetwork(netns=netns))
        await driver.prepare_disk("vm-offline", tiny_media(tiny_image), 1)
        spec = VMSpec("vm-offline", 1, 128, tiny_media(tiny_image), free_loopback_port())
        try:
            pid = await driver.start(spec)
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert any(arg.startswith(b"stream,id=net0") for arg in argv), argv
            [passt] = passt_pids(str(tmp_path))
            assert os.readlink(f"/proc/{passt}/ns/net") == f"net:[{os.stat(f'/run/netns/{netns}').st_ino}]"
        finally:
            await stop(driver, "vm-offline")
    assert not os.path.exists(f"/run/netns/{netns}")


async def test_a_passt_that_finds_no_uplink_leaves_the_vm_on_the_restricted_network(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    """Such a passt (Debian 12's, offline) is only known to fail once QEMU, launched beside it, is
    up: that paused QEMU is discarded and one on QEMU's restricted network takes its place, with
    never two QEMUs for the VM."""
    refusing = tmp_path / "refusing-passt"
    refusing.write_text("#!/bin/sh\necho 'External interface not usable' >&2\nexit 1\n")
    refusing.chmod(0o755)
    with isolated_network() as net:
        network = GuestNetwork(passt_binary=str(refusing), netns=net.host)
        driver = QemuDriver(tmp_path, accel="tcg", network=network)
        await driver.prepare_disk("vm-restricted", tiny_media(tiny_image), 1)
        spec = VMSpec("vm-restricted", 1, 128, tiny_media(tiny_image), free_loopback_port())
        try:
            pid = await driver.start(spec)
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert any(b"restrict=on" in arg for arg in argv), argv
            run_dir = str(driver.run_dir("vm-restricted"))
            qemus = [p for p in os.listdir("/proc") if p.isdigit() and run_dir.encode() in _cmdline(p)]
            assert qemus == [str(pid)]
            assert not PasstFiles(driver.run_dir("vm-restricted")).pidfile.exists()
        finally:
            await stop(driver, "vm-restricted")


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
