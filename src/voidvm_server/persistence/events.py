"""EventRepository: event rows in and out (the session's unit of work commits)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.events.bus import Event
from voidvm_server.persistence.tables import EventRow

# Held by a transaction that writes events, from its first event until it commits, on
# PostgreSQL: ids are taken in commit order, so a reader never sees id 11 before id 10 appears.
# (SQLite has one writer at a time already.) The number only has to be VoidVM's own.
EVENT_ORDER_LOCK = 0x766F6964766D  # "voidvm"


def _event(row: EventRow) -> Event:
    at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)  # SQLite drops it
    return Event(row.id, row.kind, row.vm_id, row.owner_id, row.data, at)


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, kind: str, data: dict[str, Any], *, vm_id: str | None, owner_id: str | None,
                  at: datetime) -> Event:  # fmt: skip
        if self.s.get_bind().dialect.name == "postgresql":
            await self.s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_ORDER_LOCK})
        statement = insert(EventRow).values(kind=kind, vm_id=vm_id, owner_id=owner_id, data=data,
                                            created_at=at).returning(EventRow.id)  # fmt: skip
        event_id = (await self.s.execute(statement)).scalar_one()
        return Event(int(event_id), kind, vm_id, owner_id, data, at)

    async def since(self, last_id: int, limit: int) -> list[Event]:
        """The newest `limit` events after `last_id`, oldest first."""
        rows = await self.s.execute(
            select(EventRow).where(EventRow.id > last_id).order_by(EventRow.id.desc()).limit(limit)
        )
        return [_event(row) for row in reversed(rows.scalars().all())]

    async def newest_id(self) -> int:
        return int(await self.s.scalar(select(func.max(EventRow.id))) or 0)

    async def oldest_id(self) -> int:
        return int(await self.s.scalar(select(func.min(EventRow.id))) or 0)

    async def prune(self, keep: int) -> int:
        """Delete all but the newest `keep` events; how many went."""
        newest = await self.newest_id()
        result = await self.s.execute(delete(EventRow).where(EventRow.id <= newest - keep))
        return int(result.rowcount)  # type: ignore[attr-defined]
