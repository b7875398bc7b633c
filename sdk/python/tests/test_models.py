"""Records behave as dicts and as objects."""

from __future__ import annotations

import copy
import json
import pickle

from voidvm import VM, Record


def test_record_is_a_dict_and_serializes_as_json() -> None:
    record = VM.from_json({"id": "vm-1", "ports": {"ssh": 2222}, "disks": [{"size": 20}]})
    assert json.loads(json.dumps(record)) == {
        "id": "vm-1",
        "ports": {"ssh": 2222},
        "disks": [{"size": 20}],
    }
    assert record == {"id": "vm-1", "ports": {"ssh": 2222}, "disks": [{"size": 20}]}
    assert record.disks[0].size == 20


def test_attribute_and_item_assignment_stay_in_sync() -> None:
    record = Record(a=1)
    record.b = {"c": 2}
    record["d"] = [{"e": 3}]
    assert record["b"].c == 2
    assert record.d[0].e == 3
    del record.a
    assert "a" not in record


def test_dict_methods_win_over_keys_of_the_same_name() -> None:
    record = Record({"items": [1], "id": "x"})
    assert record["items"] == [1]
    assert callable(record.items)


def test_records_copy_and_pickle() -> None:
    record = VM.from_json({"id": "vm-1", "ports": {"ssh": 1}})
    clone = copy.deepcopy(record)
    assert clone == record and clone.ports is not record.ports
    restored = pickle.loads(pickle.dumps(record))  # noqa: S301 (our own data)
    assert isinstance(restored, VM) and restored.ports.ssh == 1


def test_repr_names_the_type() -> None:
    assert repr(VM(id="vm-1")) == "VM({'id': 'vm-1'})"
