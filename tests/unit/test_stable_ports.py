"""Issue #13 on the FakeDriver: SSH ports that stay, stops of guests that ignore the power button,
and SSH only for images whose guest serves it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TCG_SCALE, Api, auth, let_tiny_serve_ssh
from tests.integration.conftest import action, create_vm, get_vm, poll
from voidvm_server.drivers.fake import FakeDriver
from voidvm_server.events.bus import Event
from voidvm_server.persistence.repositories import VMRepository
from voidvm_server.services import ssh_ports


async def kept_port(api: Api, vm_id: str) -> int | None:
    """The SSH port in the VM's row (what it takes again at its next start)."""
    async with api.container.db.reading() as s:
        vm = await VMRepository(s).get(vm_id)
    assert vm is not None
    return vm.ssh_port


async def started_port(api: Api, token: str, vm_id: str) -> int:
    vm = (await action(api, token, vm_id, "start"))["data"]
    assert vm["status"] == "running"
    port: int = vm["ports"]["ssh"]
    return port


@pytest.fixture
async def ssh_api(api: Api) -> Api:
    await let_tiny_serve_ssh(api.container.db)
    return api


@pytest.fixture
def system_events(api: Api) -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def note(event: Event) -> None:
        if event.kind == "system-event":
            seen.append(event.data)

    stop = api.container.bus.listen(note)
    yield seen
    stop()


# -- stable SSH ports ---------------------------------------------------------------------------
async def test_a_vm_takes_the_same_ssh_port_at_every_start(ssh_api: Api, admin_token: str) -> None:
    vm_id = (await create_vm(ssh_api, admin_token, "steady"))["id"]
    first = await started_port(ssh_api, admin_token, vm_id)

    stopped = (await action(ssh_api, admin_token, vm_id, "stop"))["data"]
    assert (stopped["status"], stopped["ports"]) == ("stopped", {})  # nothing is forwarded now
    assert await kept_port(ssh_api, vm_id) == first  # but the port stays the VM's

    assert await started_port(ssh_api, admin_token, vm_id) == first
    restarted = (await action(ssh_api, admin_token, vm_id, "restart"))["data"]
    assert restarted["ports"] == {"ssh": first}


async def test_a_crashed_vm_keeps_its_ssh_port(ssh_api: Api, admin_token: str) -> None:
    vm_id = (await create_vm(ssh_api, admin_token, "crashy"))["id"]
    first = await started_port(ssh_api, admin_token, vm_id)
    driver = ssh_api.container.agent.driver
    assert isinstance(driver, FakeDriver)
    driver.crash(vm_id)

    async def failed() -> dict[str, Any] | None:
        vm = await get_vm(ssh_api, admin_token, vm_id)
        return vm if vm["status"] == "error" else None

    assert (await poll(failed, timeout=10 * TCG_SCALE, what="the crash recorded"))["ports"] == {}
    assert await started_port(ssh_api, admin_token, vm_id) == first


async def test_a_stopped_vms_port_is_not_given_to_another_vm(
    ssh_api: Api, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm_id = (await create_vm(ssh_api, admin_token, "first"))["id"]
    kept = await started_port(ssh_api, admin_token, vm_id)
    await action(ssh_api, admin_token, vm_id, "stop")
    other = ssh_ports.free_loopback_port()
    offers = iter([kept, other])  # the OS offers the stopped VM's port first: it is free, after all
    monkeypatch.setattr(ssh_ports, "free_loopback_port", lambda: next(offers))

    second = (await create_vm(ssh_api, admin_token, "second"))["id"]
    assert await started_port(ssh_api, admin_token, second) == other


async def test_a_port_another_process_holds_moves_and_the_user_is_told(
    ssh_api: Api, admin_token: str, system_events: list[dict[str, Any]]
) -> None:
    vm_id = (await create_vm(ssh_api, admin_token, "crowded"))["id"]
    old = await started_port(ssh_api, admin_token, vm_id)
    await action(ssh_api, admin_token, vm_id, "stop")

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", old))
        squatter.listen()
        vm = (await action(ssh_api, admin_token, vm_id, "start"))["data"]

    new = vm["ports"]["ssh"]
    assert new != old
    assert vm["status_reason"] == (
        f"the VM's SSH port {old} was held by another process, so SSH is now forwarded from port {new}"
    )
    [moved] = [e for e in system_events if e["event"] == "vm.port-changed"]
    assert moved == {
        "event": "vm.port-changed",
        "vmId": vm_id,
        "userId": vm["owner_id"],
        "actor": "admin",
        "message": f"VM {vm_id}: {vm['status_reason']}",
        "level": "warning",
        "ports": {"ssh": new},
        "previousPorts": {"ssh": old},
    }
    started = [e for e in system_events if e["event"] == "vm.started" and e["vmId"] == vm_id][-1]
    assert vm["status_reason"] in started["message"]
    # From now on the new port is the VM's, and the old one is nobody's.
    await action(ssh_api, admin_token, vm_id, "stop")
    again = (await action(ssh_api, admin_token, vm_id, "start"))["data"]
    assert (again["ports"], again["status_reason"]) == ({"ssh": new}, None)


# -- images that serve no SSH -------------------------------------------------------------------
async def test_the_tiny_guest_gets_no_ssh_port(api: Api, admin_token: str) -> None:
    image = (await api.client.get("/api/v1/images/tiny", headers=auth(admin_token))).json()["data"]
    assert image["serves_ssh"] is False
    vm_id = (await create_vm(api, admin_token, "no-sshd"))["id"]
    running = (await action(api, admin_token, vm_id, "start"))["data"]
    assert (running["status"], running["ports"]) == ("running", {})
    assert await kept_port(api, vm_id) is None


# -- stopping a guest that does not answer the power button ----------------------------------------
async def deaf_running_vm(api: Api, token: str, name: str) -> str:
    vm_id: str = (await create_vm(api, token, name))["id"]
    await action(api, token, vm_id, "start")
    driver = api.container.agent.driver
    assert isinstance(driver, FakeDriver)
    driver.deaf_to_power_button.add(vm_id)  # a guest still booting: nobody handles ACPI yet
    return vm_id


async def test_a_stop_the_guest_ignores_says_it_was_powered_off(api: Api, admin_token: str) -> None:
    vm_id = await deaf_running_vm(api, admin_token, "booting")
    vm = (await action(api, admin_token, vm_id, "stop", timeout=1.5))["data"]
    assert vm["status"] == "stopped"
    assert vm["status_reason"] == (
        "the guest did not answer the ACPI power button within 1.5 s (it may still have been "
        "booting); it was powered off"
    )
    assert not api.container.agent.driver.is_running(vm_id)


async def test_a_restart_the_guest_ignores_says_so_once_running(api: Api, admin_token: str) -> None:
    vm_id = await deaf_running_vm(api, admin_token, "rebooter")
    vm = (await action(api, admin_token, vm_id, "restart", timeout=1))["data"]
    assert vm["status"] == "running"
    assert vm["status_reason"].startswith("the guest did not answer the ACPI power button within 1 s")
    assert vm["status_reason"].endswith("it was powered off, then started again")


async def test_a_stop_with_timeout_0_kills_at_once(
    api: Api, admin_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm_id = await deaf_running_vm(api, admin_token, "impatient")
    pressed: list[str] = []

    async def press(vm: str) -> None:
        pressed.append(vm)

    monkeypatch.setattr(api.container.agent.driver, "powerdown", press)
    vm = (await action(api, admin_token, vm_id, "stop", timeout=0))["data"]
    assert (vm["status"], vm["status_reason"], pressed) == ("stopped", None, [])


@pytest.mark.parametrize("timeout", [-1, 3601, "soon"])
async def test_a_stop_timeout_out_of_bounds_is_a_validation_error(
    api: Api, admin_token: str, timeout: Any
) -> None:
    vm_id = await deaf_running_vm(api, admin_token, "bounded")
    response = await api.client.post(
        f"/api/v1/vms/{vm_id}/stop", json={"timeout": timeout}, headers=auth(admin_token)
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [d["field"] for d in error["details"]] == ["timeout"]
    assert (await get_vm(api, admin_token, vm_id))["status"] == "running"
