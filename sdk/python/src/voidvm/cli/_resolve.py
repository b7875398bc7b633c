"""Names to ids: every command takes a VM, user or token by name or by id.

A VM reference is tried as an id, then as an exact name, then as a unique id prefix (as
``docker`` does). Two VMs of different owners may share a name; an admin then gets an error
listing both ids. Images need nothing here: the server resolves image names itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._client import VoidVMClient
from .._errors import NotFoundError, ValidationError

__all__ = ["token_id", "user_id", "vm_id"]

_VM_ID = re.compile(r"^vm-[0-9a-f]{12}$")


def vm_id(client: VoidVMClient, ref: str) -> str:
    if _VM_ID.match(ref):
        return ref
    candidates = client.vms.list(search=ref) if not ref.startswith("vm-") else client.vms.list()
    return _pick("VM", ref, candidates, name_key="name", owner_key="owner")


def user_id(client: VoidVMClient, ref: str) -> str:
    return _pick("user", ref, client.users.list(), name_key="username")


def token_id(client: VoidVMClient, ref: str) -> str:
    return _pick("API token", ref, client.auth.tokens.list(), name_key="name")


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
