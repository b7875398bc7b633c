"""The HostAgent port over the agent's unix socket (agent/server.py and agent/remote.py), with the
fake driver behind it: calls, their errors, events, and what is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ConsoleViewer as Viewer
from tests.integration.conftest import poll
from voidvm_server.agent import wire
from voidvm_server.agent.local import LocalAgent
from voidvm_server.agent.port import ConsoleOutput, HostReconnected, ImageRef, VMExited, VMPlan
from voidvm_server.agent.remote import RemoteAgent
from voidvm_server.agent.server import AgentServer
from voidvm_server.drivers.fake import FakeDriver
from voidvm_server.errors import (
    DriverError,
    HypervisorTimeoutError,
    HypervisorUnavailableError,
    InvalidStateError,
    StorageError,
)
from voidvm_server.events.bus import EventBus
from voidvm_server.services.console import ConsoleHub

IMAGE = ImageRef("img-tiny", "kernel", {"kernel": "vmlinuz"}, "console=ttyS0")


@dataclass
class Pair:
    driver: FakeDriver
    server: AgentServer
    remote: RemoteAgent


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    driver = FakeDriver(tmp_path)
    server = AgentServer(LocalAgent(driver, images_root=tmp_path / "images"), tmp_path / "agent.sock")
    await server.start()
    remote = RemoteAgent(server.path, retry=0.05)
    await remote.connect()
    try:
        yield Pair(driver, server, remote)
    finally:
        await remote.close()
        await server.close()


async def test_calls_cross_the_socket_with_their_answers(pair: Pair) -> None:
    assert pair.remote.accel == "fake"
    await pair.remote.prepare_disk("vm-1", IMAGE, 3)
    assert await pair.remote.has_disk("vm-1") and pair.driver.disks["vm-1"] == 3
    pid = await pair.remote.start(VMPlan("vm-1", 1, 128, IMAGE, None))
    assert pid == pair.driver.pids["vm-1"] and await pair.remote.is_running("vm-1")
    assert await pair.remote.known_vms() == ["vm-1"]
    stats = await pair.remote.stats("vm-1")
    assert stats.memory_used_mb == 64.0
    await pair.remote.console_write("vm-1", b"\x00ls\n")
    assert pair.driver.console_input["vm-1"] == b"\x00ls\n"
    many = await asyncio.gather(*(pair.remote.query_status("vm-1") for _ in range(20)))  # side by side
    assert many == ["running"] * 20


async def test_errors_arrive_as_the_class_and_code_they_were(pair: Pair) -> None:
    with pytest.raises(InvalidStateError) as info:
        await pair.remote.pause("vm-none")
    assert (info.value.code, info.value.current) == ("VM_NOT_RUNNING", "stopped")
    pair.driver.fail_next_start = "QEMU failed to start"
    with pytest.raises(DriverError, match="QEMU failed to start"):
        await pair.remote.start(VMPlan("vm-2", 1, 128, IMAGE, None))
    for error in (HypervisorTimeoutError("slow"), StorageError("full", code="STORAGE_FULL")):
        back = wire.unpack_error(wire.pack_error(error))
        assert type(back) is type(error) and (back.code, back.message) == (error.code, error.message)


async def test_an_image_that_would_leave_the_store_is_refused_by_the_agent(pair: Pair) -> None:
    escaping = ImageRef("img-1", "qcow2", {"disk": "../../etc/shadow"})
    with pytest.raises(DriverError, match="could not read the call"):
        await pair.remote.prepare_disk("vm-3", escaping, 1)
    assert "vm-3" not in pair.driver.disks


async def test_events_reach_each_subscriber_in_order(pair: Pair) -> None:
    feed = pair.remote.subscribe()
    pid = await pair.remote.start(VMPlan("vm-4", 1, 128, IMAGE, None))
    pair.driver.guest_prints("vm-4", b"boot\n")
    pair.driver.crash("vm-4")
    async with asyncio.timeout(5):
        assert await feed.next() == ConsoleOutput("vm-4", b"boot\n", 5)
        assert await feed.next() == VMExited("vm-4", pid, False, "the QEMU process exited unexpectedly")
    feed.close()


async def test_calls_fail_as_unavailable_while_the_agent_is_away_and_work_once_it_is_back(
    pair: Pair,
) -> None:
    await pair.server.close()
    with pytest.raises(HypervisorUnavailableError):
        await pair.remote.known_vms()
    await pair.server.start()
    assert await pair.remote.known_vms() == []


async def test_a_vnc_stream_of_a_vm_without_a_screen_is_a_clear_error(pair: Pair) -> None:
    with pytest.raises(DriverError, match="display is not reachable"):
        await pair.remote.open_vnc("vm-none")


async def restart_agent(pair: Pair, tmp_path: Path) -> None:
    """As a new agent process would: a new LocalAgent over the same host (the VMs live on)."""
    await pair.server.close()
    pair.server = AgentServer(LocalAgent(pair.driver, images_root=tmp_path / "images"), pair.server.path)
    await pair.server.start()


async def test_after_the_agent_was_away_subscribers_are_told_so(pair: Pair, tmp_path: Path) -> None:
    feed = pair.remote.subscribe()
    await restart_agent(pair, tmp_path)
    async with asyncio.timeout(5):
        assert await feed.next() == HostReconnected()
    feed.close()


async def seen(viewer: Viewer, tail: bytes) -> bool:
    return viewer.seen.endswith(tail)


async def test_a_console_viewer_sees_the_output_of_a_new_agent_counted_from_zero(
    pair: Pair, tmp_path: Path
) -> None:
    hub = ConsoleHub(pair.remote, EventBus())
    hub.start()
    try:
        await pair.remote.start(VMPlan("vm-5", 1, 128, IMAGE, None))
        pair.driver.guest_prints("vm-5", b"x" * 100)
        viewer = Viewer()
        viewer.seen = await hub.attach("vm-5", viewer)  # the replay holds up to position 100
        assert viewer.seen == b"x" * 100
        feed = pair.remote.subscribe()
        await restart_agent(pair, tmp_path)
        async with asyncio.timeout(5):  # the events are back: the hub's feed holds the news too,
            assert await feed.next() == HostReconnected()  # ahead of any output that follows
        pair.driver.guest_prints("vm-5", b"after")  # the new agent counts from 0: end = 5
        await poll(lambda: seen(viewer, b"after"), timeout=5, interval=0.01, what="the new agent's output")
        assert viewer.seen == b"x" * 100 + b"after"
    finally:
        await hub.close()
