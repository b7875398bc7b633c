"""What callers ask of the VM service: create and update bodies, list queries and sorting."""

from __future__ import annotations

from dataclasses import dataclass, field

from voidvm_server.errors import ValidationError
from voidvm_server.persistence.repositories import SORTABLE


@dataclass
class VMCreate:
    name: str
    cpu: int
    memory: int
    disk: int
    os: str | None = None
    description: str = ""
    auto_start: bool = False


@dataclass
class VMUpdate:
    name: str | None = None
    description: str | None = None
    cpu: int | None = None
    memory: int | None = None
    disk: int | None = None


@dataclass
class VMQuery:
    page: int = 1
    limit: int = 20
    status: list[str] = field(default_factory=list)
    search: str | None = None
    sort: str = "-created_at"
    owner: str | None = None


def parse_sort(sort: str) -> list[tuple[str, bool]]:
    keys: list[tuple[str, bool]] = []
    for part in filter(None, (p.strip() for p in sort.split(","))):
        desc = part.startswith("-")
        key = part.lstrip("+-")
        if key == "memory_mb":
            key = "memory"
        if key not in SORTABLE:
            raise ValidationError("sort", f"unknown field '{key}'; use one of {sorted(SORTABLE)}")
        keys.append((key, desc))
    return keys
