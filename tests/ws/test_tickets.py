"""POST /vms/{id}/console tickets and the raw streams' refusals (FakeDriver: no real guest)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import auth
from tests.ws.conftest import TIMEOUT, WsServer
from voidvm_server.drivers.fake import FakeDriver
from voidvm_server.services.tickets import TicketService


async def running_vm(server: WsServer, token: str, name: str) -> str:
    vm_id = await server.create_vm(token, name)
    response = await server.http.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))
    assert response.status_code == 200, response.text
    return vm_id


async def ticket(server: WsServer, token: str, vm_id: str, kind: str = "serial") -> dict[str, object]:
    response = await server.http.post(
        f"/api/v1/vms/{vm_id}/console", json={"type": kind}, headers=auth(token)
    )
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()["data"]
    return data


async def test_a_ticket_names_its_stream_and_expires_in_30_seconds(ws_fake: WsServer, admin: str) -> None:
    vm_id = await running_vm(ws_fake, admin, "tickets")
    serial = await ticket(ws_fake, admin, vm_id)
    assert serial["expires_in"] == 30 and serial["type"] == "serial"
    assert serial["url"] == f"{ws_fake.ws_base}/api/v1/vms/{vm_id}/console?ticket={serial['ticket']}"
    vnc = await ticket(ws_fake, admin, vm_id, "vnc")
    assert str(vnc["url"]).startswith(f"{ws_fake.ws_base}/api/v1/vms/{vm_id}/vnc?ticket=")


async def test_tickets_follow_the_rest_rules(ws_fake: WsServer, admin: str) -> None:
    stopped = await ws_fake.create_vm(admin, "stopped")
    response = await ws_fake.http.post(f"/api/v1/vms/{stopped}/console", json={}, headers=auth(admin))
    assert response.status_code == 409 and response.json()["error"]["code"] == "VM_NOT_RUNNING"
    alice = await ws_fake.create_user(admin, "alice")
    response = await ws_fake.http.post(f"/api/v1/vms/{stopped}/console", json={}, headers=auth(alice))
    assert response.status_code == 404 and response.json()["error"]["code"] == "VM_NOT_FOUND"
    response = await ws_fake.http.post(
        f"/api/v1/vms/{stopped}/console", json={"type": "rdp"}, headers=auth(admin)
    )
    assert response.status_code == 400
    response = await ws_fake.http.post(f"/api/v1/vms/{stopped}/console", json={})
    assert response.status_code == 401


async def test_a_used_ticket_is_refused(ws_fake: WsServer, admin: str) -> None:
    vm_id = await running_vm(ws_fake, admin, "used")
    issued = await ticket(ws_fake, admin, vm_id)
    path = f"/api/v1/vms/{vm_id}/console?ticket={issued['ticket']}"
    driver = ws_fake.container.agent.driver
    assert isinstance(driver, FakeDriver)
    async with ws_fake.socket(path) as first:  # accepted: the stream carries the guest's output
        driver.guest_prints(vm_id, b"login: ")
        assert await asyncio.wait_for(first.connection.recv(), TIMEOUT) == b"login: "
    async with ws_fake.socket(path) as second:
        code, reason = await second.closed()
    assert code == 4401 and "already used" in reason


async def test_an_expired_ticket_is_refused(ws_fake: WsServer, admin: str) -> None:
    now = [time.time()]
    ws_fake.container.tickets = TicketService(ws_fake.container.db, 30, lambda: now[0])
    vm_id = await running_vm(ws_fake, admin, "expired")
    issued = await ticket(ws_fake, admin, vm_id, "vnc")
    now[0] += 31
    async with ws_fake.socket(f"/api/v1/vms/{vm_id}/vnc?ticket={issued['ticket']}") as ws:
        code, reason = await ws.closed()
    assert code == 4401 and "expired" in reason


@pytest.mark.parametrize("stream", ["console", "vnc"])
async def test_a_ticket_only_opens_the_stream_and_vm_it_was_issued_for(
    ws_fake: WsServer, admin: str, stream: str
) -> None:
    vm_id = await running_vm(ws_fake, admin, "bound")
    other = await running_vm(ws_fake, admin, "other")
    wrong_kind = await ticket(ws_fake, admin, vm_id, "vnc" if stream == "console" else "serial")
    async with ws_fake.socket(f"/api/v1/vms/{vm_id}/{stream}?ticket={wrong_kind['ticket']}") as ws:
        assert (await ws.closed())[0] == 4401
    right_kind = await ticket(ws_fake, admin, vm_id, "serial" if stream == "console" else "vnc")
    async with ws_fake.socket(f"/api/v1/vms/{other}/{stream}?ticket={right_kind['ticket']}") as ws:
        assert (await ws.closed())[0] == 4401


async def test_raw_streams_with_a_token_follow_ownership_and_state(ws_fake: WsServer, admin: str) -> None:
    alice = await ws_fake.create_user(admin, "alice")
    admins = await running_vm(ws_fake, admin, "admins")
    stopped = await ws_fake.create_vm(alice, "alices")
    async with ws_fake.socket(f"/api/v1/vms/{admins}/vnc", additional_headers=auth(alice)) as ws:
        assert (await ws.closed())[0] == 4404
    async with ws_fake.socket(f"/api/v1/vms/{stopped}/console?token={alice}") as ws:
        code, reason = await ws.closed()
    assert code == 4409 and "not running" in reason
    async with ws_fake.socket(f"/api/v1/vms/{stopped}/console") as ws:
        assert (await ws.closed())[0] == 4401


async def test_a_ticket_issued_under_a_token_since_revoked_opens_nothing(
    ws_fake: WsServer, admin: str
) -> None:
    # The ticket keeps what the token stood for, not the token: the logout reaches it.
    bob = await ws_fake.create_user(admin, "bob")
    vm_id = await running_vm(ws_fake, bob, "revoked")
    issued = await ticket(ws_fake, bob, vm_id)
    response = await ws_fake.http.post("/api/v1/auth/logout", headers=auth(bob))
    assert response.status_code == 200, response.text
    async with ws_fake.socket(f"/api/v1/vms/{vm_id}/console?ticket={issued['ticket']}") as ws:
        code, reason = await ws.closed()
    assert code == 4401 and "no longer valid" in reason
