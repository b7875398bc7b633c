"""One place that says what time it is (UTC), so tests can reason about it."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """UTC to the second, e.g. 2026-11-29T03:10:00Z (every stored time is UTC; isoformat is C and
    several times cheaper than strftime, which shows on a page of VMs)."""
    return value.isoformat(timespec="seconds")[:19] + "Z" if value else None
