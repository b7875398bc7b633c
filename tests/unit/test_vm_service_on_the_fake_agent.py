"""VMService and ConsoleHub against the fake host agent, without the app: no HTTP, no lifespan.

The services are built here by hand around a LocalAgent serving a FakeDriver, as the composition
root builds them around the real one; what the host reports reaches them as events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ConsoleViewer as Viewer
from tests.conftest import make_settings
from tests.integration.conftest import poll
from voidvm_server.agent.local import LocalAgent
from voidvm_server.agent.port import ConsoleOutput, HostReconnected, VMExited
from voidvm_server.api.app import disk_reserve
from voidvm_server.auth.principal import Principal
from voidvm_server.domain.models import VM, Quota, Role, Usage, User, UserStatus, VMStatus
from voidvm_server.drivers.fake import FakeDriver
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.events.bus import EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import UserRepository
from voidvm_server.services.audit import AuditLog
from voidvm_server.services.clock import now
from voidvm_server.services.console import ConsoleHub
from voidvm_server.services.event_log import EventLog
from voidvm_server.services.ids import new_id
from voidvm_server.services.images import ImageService
from voidvm_server.services.live_config import LiveConfigStore
from voidvm_server.services.operations import OperationService
from voidvm_server.services.tasks import BackgroundTasks
from voidvm_server.services.vm_locks import VMLocks
from voidvm_server.services.vm_requests import VMCreate
from voidvm_server.services.vms import VMService


@dataclass
class Kit:
    vms: VMService
    consoles: ConsoleHub
    driver: FakeDriver
    owner: Principal


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    settings = make_settings(tmp_path)
    db = Database(settings.resolved_database_url)
    await db.migrate()
    live = LiveConfigStore(db, settings)
    await live.load()
    bus, tasks, audit = EventBus(), BackgroundTasks(), AuditLog(db)
    events = EventLog(db, bus)
    operations = OperationService(db, events, tasks, retention_days=30)
    images = ImageService(db, settings, QemuImg(), default_image=lambda: live.current.default_image,
                          operations=operations)  # fmt: skip
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"never booted by the fake")
    await images.register_kernel_image("tiny", kernel, None, "console=ttyS0", default=True)
    driver = FakeDriver(tmp_path)
    agent = LocalAgent(driver, images_root=settings.data_dir / "images")
    vms = VMService(
        db, agent, images, events, live, settings, disk_reserve(settings), operations, tasks, audit
    )
    consoles = ConsoleHub(agent, bus)
    vms.start_watching()
    consoles.start()
    stamp = now()
    user = User(new_id("usr"), "owner", None, "-", Role.USER, UserStatus.ACTIVE, Quota(5, 16, 32768, 500),
                Usage(), 0, 0, None, stamp, stamp, None)  # fmt: skip
    async with db.session() as s:
        await UserRepository(s).add(user)
    try:
        yield Kit(vms, consoles, driver, Principal(user, session_id=None))
    finally:
        await consoles.close()
        await vms.close()
        await tasks.close()
        await operations.close()
        await agent.close()
        await db.close()


async def running_vm(kit: Kit, name: str = "web") -> str:
    vm = await kit.vms.create(kit.owner, VMCreate(name=name, cpu=1, memory=128, disk=1))
    await kit.vms.action(kit.owner, vm.id, "start")
    return vm.id


async def status_becomes(kit: Kit, vm_id: str, status: VMStatus) -> VM:
    async def reached() -> VM | None:
        vm = await kit.vms.state.reload(vm_id)
        return vm if vm.status is status else None

    return await poll(reached, timeout=2, interval=0.005, what=f"the VM to turn {status.value}")


async def shows(viewer: Viewer, tail: bytes) -> None:
    async def seen() -> bool:
        return viewer.seen.endswith(tail)

    await poll(seen, timeout=2, interval=0.005, what=f"the viewer to see {tail!r}")


async def test_a_crash_the_host_reports_turns_the_vm_error_with_its_reason(kit: Kit) -> None:
    vm_id = await running_vm(kit)
    kit.driver.crash(vm_id)
    vm = await status_becomes(kit, vm_id, VMStatus.ERROR)
    assert (vm.status, vm.status_reason, vm.pid) == (
        VMStatus.ERROR, "the QEMU process exited unexpectedly", None,
    )  # fmt: skip


async def test_an_exit_the_service_asked_for_is_not_taken_for_a_crash(kit: Kit) -> None:
    vm_id = await running_vm(kit)
    pid = (await kit.vms.state.reload(vm_id)).pid
    assert pid is not None
    feed = kit.vms.agent.subscribe()
    try:
        vm = await kit.vms.action(kit.owner, vm_id, "stop")
        assert await feed.next() == VMExited(vm_id, pid, True, "powered off")
    finally:
        feed.close()
    await kit.vms.tasks.wait_idle()
    assert (vm.status, (await kit.vms.state.reload(vm_id)).status) == (VMStatus.STOPPED, VMStatus.STOPPED)


async def test_a_late_exit_of_an_earlier_process_never_hides_the_crash_of_the_current_one(kit: Kit) -> None:
    vm_id = await running_vm(kit)
    first = (await kit.vms.state.reload(vm_id)).pid
    await kit.vms.action(kit.owner, vm_id, "restart")
    second = kit.driver.pids.pop(vm_id)
    kit.driver.running.pop(vm_id)  # the new process dies at once; its report comes second
    assert first is not None and first != second
    kit.vms.handle_host_event(VMExited(vm_id, first, True, "powered off"))  # the old one, late
    await kit.vms.tasks.wait_idle()
    kit.vms.handle_host_event(VMExited(vm_id, second, False, "the QEMU process exited unexpectedly"))
    await kit.vms.tasks.wait_idle()
    vm = await kit.vms.state.reload(vm_id)
    assert (vm.status, vm.status_reason) == (VMStatus.ERROR, "the QEMU process exited unexpectedly")


async def test_a_vm_whose_qemu_ended_while_the_agent_was_away_turns_error(kit: Kit) -> None:
    gone, alive = await running_vm(kit), await running_vm(kit, "db")
    kit.driver.running.pop(gone)  # ended, and nobody was there to report it
    kit.driver.pids.pop(gone)
    kit.vms.handle_host_event(HostReconnected())
    await kit.vms.tasks.wait_idle()
    vm = await kit.vms.state.reload(gone)
    assert (vm.status, vm.status_reason) == (
        VMStatus.ERROR,
        "the QEMU process ended while the host agent was away",
    )
    assert (await kit.vms.state.reload(alive)).status is VMStatus.RUNNING


async def test_a_pause_the_host_reports_is_recorded_with_its_reason(kit: Kit) -> None:
    vm_id = await running_vm(kit)
    kit.driver.pause_on_its_own(vm_id, "the host's disk is full")
    vm = await status_becomes(kit, vm_id, VMStatus.PAUSED)
    assert (vm.status, vm.status_reason) == (VMStatus.PAUSED, "the host's disk is full")


async def test_output_printed_while_the_replay_is_fetched_is_shown_once_and_in_order(kit: Kit) -> None:
    vm_id = await running_vm(kit)
    kit.driver.guest_prints(vm_id, b"boot ")  # in the replay buffer, and still queued for the hub
    agent = kit.vms.agent
    assert isinstance(agent, LocalAgent)
    recent = agent.console_recent

    async def slow_recent(vm: str) -> tuple[bytes, int]:
        answer = await recent(vm)
        kit.driver.guest_prints(vm, b"login: ")  # printed after the replay was taken
        await asyncio.sleep(0.01)  # as an agent across a socket takes a while to answer
        return answer

    agent.console_recent = slow_recent  # type: ignore[method-assign]
    viewer = Viewer()
    replay = await kit.consoles.attach(vm_id, viewer)
    viewer.seen = replay + viewer.seen
    kit.driver.guest_prints(vm_id, b"root")
    await shows(viewer, b"root")
    assert viewer.seen == b"boot login: root"


async def test_each_subscriber_reads_every_event_in_order(kit: Kit) -> None:
    first, second = kit.vms.agent.subscribe(), kit.vms.agent.subscribe()
    vm_id = await running_vm(kit)
    kit.driver.guest_prints(vm_id, b"a")
    kit.driver.guest_prints(vm_id, b"bc")
    expected = [ConsoleOutput(vm_id, b"a", 1), ConsoleOutput(vm_id, b"bc", 3)]
    for feed in (first, second):
        assert [await feed.next(), await feed.next()] == expected
        feed.close()


async def test_output_already_in_the_replay_is_not_shown_again_when_the_hub_reads_it_later(kit: Kit) -> None:
    vm_id = await running_vm(kit)
    kit.driver.guest_prints(vm_id, b"boot ")  # the hub has not read this event yet
    viewer = Viewer()
    viewer.seen = await kit.consoles.attach(vm_id, viewer)
    kit.driver.guest_prints(vm_id, b"login: ")
    await shows(viewer, b"login: ")
    assert viewer.seen == b"boot login: "


async def test_a_vm_left_mid_action_by_a_dead_worker_is_reclaimed_and_one_in_action_is_not(
    kit: Kit, tmp_path: Path
) -> None:
    # The intents as a worker killed mid-action leaves them: written, with nobody's lock held.
    # A worker killed after writing `stopping`, with nobody's lock held.
    stopping, starting = await running_vm(kit, "stopping"), await running_vm(kit, "starting")
    await kit.vms.state.set(stopping, VMStatus.STOPPING)
    await kit.vms.state.set(starting, VMStatus.STOPPING)
    other_worker = VMLocks(kit.vms.settings.data_dir / "locks")  # another process's locks
    await other_worker(starting).acquire()  # ... and it is still acting on this one
    try:
        await kit.vms.recovery.reclaim_abandoned()
        # Reconciled as at start-up (the fake's host re-attaches to nothing: the stop went through).
        assert (await kit.vms.state.reload(stopping)).status is VMStatus.STOPPED
        assert (await kit.vms.state.reload(starting)).status is VMStatus.STOPPING  # left alone
    finally:
        other_worker(starting).release()
