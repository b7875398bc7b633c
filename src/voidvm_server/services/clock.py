"""One place that says what time it is (UTC), so tests can reason about it."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
