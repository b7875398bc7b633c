"""The VM state machine."""

from __future__ import annotations

from itertools import pairwise

import pytest

from voidvm_server.domain.models import VMStatus as S
from voidvm_server.domain.states import TRANSITIONS, can_move, check_action
from voidvm_server.errors import InvalidStateError


def test_every_status_has_transitions() -> None:
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(
    ("action", "current", "code"),
    [
        ("start", S.RUNNING, "VM_ALREADY_RUNNING"),
        ("stop", S.STOPPED, "VM_NOT_RUNNING"),
        ("delete", S.RUNNING, "INVALID_STATE"),
        ("start", S.STARTING, "OPERATION_IN_PROGRESS"),
        ("resume", S.RUNNING, "INVALID_STATE"),
    ],
)
def test_illegal_actions_raise_the_right_code(action: str, current: S, code: str) -> None:
    with pytest.raises(InvalidStateError) as info:
        check_action(action, current)
    assert info.value.code == code
    assert info.value.current == current.value


def test_documented_paths_are_allowed() -> None:
    path = [S.CREATING, S.STOPPED, S.STARTING, S.RUNNING, S.PAUSED, S.RUNNING, S.REBOOTING,
            S.RUNNING, S.STOPPING, S.STOPPED, S.DELETING]  # fmt: skip
    for current, target in pairwise(path):
        assert can_move(current, target), (current, target)
    assert not can_move(S.STOPPED, S.RUNNING)
