"""Names to ids: every command takes a VM, user or token by name or by id.

A VM reference is tried as an id, then as an exact name, then as a unique id prefix (as
``docker`` does). Two VMs of different owners may share a name; an admin then gets an error
listing both ids. Images need nothing here: the server resolves image names itself. An operation
has no name: its id, or a unique prefix of one of the newest 100 (``op-`` may be left out).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._client import VoidVMClient
from .._errors import NotFoundError, ValidationError

__all__ = ["operation_id", "resource_id", "token_id", "user_id", "vm_id"]

_VM_ID = re.compile(r"^vm-[0-9a-f]{12}$")
_OPERATION_ID = re.compile(r"^op-[0-9a-f]{12}$")
_RESOURCE_ID = re.compile(r"^[a-z]{2,3}-[0-9a-f]{12}$")
#: How many of the newest operations a prefix is looked for in.
_RECENT_OPERATIONS = 100


def vm_id(client: VoidVMClient, ref: str) -> str:
    if _VM_ID.match(ref):
        return ref
    candidates = client.vms.list(search=ref) if not ref.startswith("vm-") else client.vms.list()
    return _pick("VM", ref, candidates, name_key="name", owner_key="owner")


def user_id(client: VoidVMClient, ref: str) -> str:
    return _pick("user", ref, client.users.list(), name_key="username")


def token_id(client: VoidVMClient, ref: str) -> str:
    return _pick("API token", ref, client.auth.tokens.list(), name_key="name")


def operation_id(client: VoidVMClient, ref: str) -> str:
    if _OPERATION_ID.match(ref):
        return ref
    recent = client.operations.list_page(1, _RECENT_OPERATIONS).items
    prefixed = ref if ref.startswith("op-") else f"op-{ref}"
    return _pick("operation", prefixed, recent, name_key="id")


def resource_id(client: VoidVMClient, ref: str) -> str:
    """What an operation works on, by id, or by VM name, else by image name."""
    if _RESOURCE_ID.match(ref):
        return ref
    try:
        return vm_id(client, ref)
    except NotFoundError:
        return str(client.images.get(ref)["id"])


def _pick(
    noun: str,
    ref: str,
    records: Sequence[Mapping[str, Any]],
    *,
    name_key: str,
    owner_key: str | None = None,
) -> str:
    for match in (_by(lambda r: r.get("id") == ref), _by(lambda r: r.get(name_key) == ref)):
        found = match(records)
        if len(found) == 1:
            return str(found[0]["id"])
        if len(found) > 1:
            raise _ambiguous(noun, ref, found, owner_key)
    prefixed = _by(lambda r: str(r.get("id", "")).startswith(ref))(records) if len(ref) >= 4 else []
    if len(prefixed) == 1:
        return str(prefixed[0]["id"])
    if len(prefixed) > 1:
        raise _ambiguous(noun, ref, prefixed, owner_key)
    raise NotFoundError(
        f"no {noun} is named {ref!r} or has that id",
        code=f"{noun.upper().replace(' ', '_')}_NOT_FOUND",
        status=404,
    )


def _by(
    predicate: Callable[[Mapping[str, Any]], bool],
) -> Callable[[Sequence[Mapping[str, Any]]], list[Mapping[str, Any]]]:
    return lambda records: [record for record in records if predicate(record)]


def _ambiguous(
    noun: str, ref: str, found: Sequence[Mapping[str, Any]], owner_key: str | None
) -> ValidationError:
    def label(record: Mapping[str, Any]) -> str:
        owner = record.get(owner_key) if owner_key else None
        return f"{record['id']} (owner {owner})" if owner else str(record["id"])

    return ValidationError(
        f"{len(found)} {noun}s match {ref!r}: use an id",
        code="AMBIGUOUS_NAME",
        details=[label(record) for record in found],
    )
