"""Status changes are compare-and-set against the transition table (services/vm_state.py)."""

from __future__ import annotations

import pytest

from tests.conftest import Api, auth
from voidvm_server.domain.models import VMStatus as S
from voidvm_server.domain.states import TRANSITIONS, can_move, check_move
from voidvm_server.errors import ConcurrentChangeError, IllegalTransitionError
from voidvm_server.persistence.repositories import VMRepository


async def _stopped_vm(api: Api, token: str) -> str:
    body = {"name": "cas", "cpu": 1, "memory": 256, "disk": 1}
    answer = await api.client.post("/api/v1/vms", json=body, headers=auth(token))
    assert answer.status_code == 201, answer.text
    vm_id: str = answer.json()["data"]["id"]
    return vm_id


def test_every_move_outside_the_table_is_refused_with_a_typed_error() -> None:
    for current in S:
        for target in S:
            if target is current or target in TRANSITIONS[current]:
                check_move(current, target)
                continue
            with pytest.raises(IllegalTransitionError) as info:
                check_move(current, target)
            assert (info.value.current, info.value.target) == (current.value, target.value)
    assert can_move(S.ERROR, S.ERROR) and not can_move(S.DELETING, S.RUNNING)


async def test_an_illegal_move_writes_nothing_and_publishes_nothing(api: Api, admin_token: str) -> None:
    vm_id = await _stopped_vm(api, admin_token)
    last_event = await api.container.events.last_id()
    with pytest.raises(IllegalTransitionError):
        await api.container.vms.state.set(vm_id, S.RUNNING, pid=4242)  # stopped -> running skips starting
    vm = await api.container.vms.state.reload(vm_id)
    assert vm.status is S.STOPPED and vm.pid is None
    assert await api.container.events.last_id() == last_event


async def test_an_intent_from_a_status_another_writer_changed_is_refused(api: Api, admin_token: str) -> None:
    vm_id = await _stopped_vm(api, admin_token)
    async with api.container.db.session() as s:  # another worker moved it first
        assert await VMRepository(s).change_status(vm_id, S.STOPPED, status=S.STARTING.value)
    with pytest.raises(ConcurrentChangeError) as info:
        await api.container.vms.state.set(vm_id, S.STARTING, expected=S.STOPPED)
    assert info.value.code == "OPERATION_IN_PROGRESS" and info.value.current == "starting"
    async with api.container.db.session() as s:  # the row's compare-and-set itself
        assert not await VMRepository(s).change_status(vm_id, S.STOPPED, status=S.DELETING.value)
    assert (await api.container.vms.state.reload(vm_id)).status is S.STARTING


async def test_a_start_racing_a_start_from_another_worker_answers_409(api: Api, admin_token: str) -> None:
    """Two workers both read `stopped`; the second one's intent finds `starting` and stops there."""
    vm_id = await _stopped_vm(api, admin_token)
    vms = api.container.vms
    original = vms.state.set

    async def other_worker_first(vm: str, status: S, reason: str | None = None, **kw: object) -> object:
        if status is S.STARTING:
            async with api.container.db.session() as s:
                await VMRepository(s).change_status(vm, S.STOPPED, status=S.STARTING.value)
        return await original(vm, status, reason, **kw)  # type: ignore[arg-type]

    vms.state.set = other_worker_first  # type: ignore[method-assign]
    try:
        answer = await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(admin_token))
    finally:
        vms.state.set = original  # type: ignore[method-assign]
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "OPERATION_IN_PROGRESS"
    assert vm_id not in api.container.agent.driver.running  # type: ignore[attr-defined]  # no second QEMU
