"""EventRepository: event rows in and out (the session's unit of work commits)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, cast, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.events.bus import Event
from voidvm_server.persistence.tables import EventRow

# Held by a transaction that writes events, from its first event until it commits, on
# PostgreSQL: ids are taken in commit order, so a reader never sees id 11 before id 10 appears.
# (SQLite has one writer at a time already.) The number only has to be VoidVM's own.
EVENT_ORDER_LOCK = 0x766F6964766D  # "voidvm"
# The channel every PostgreSQL writer of events notifies with each new id, at its commit: each
# process's EventLog LISTENs on it to read the new events soon.
EVENT_CHANNEL = "voidvm_events"
_COLUMNS = (EventRow.id, EventRow.kind, EventRow.vm_id, EventRow.owner_id, EventRow.data, EventRow.created_at)


def _event(row: EventRow) -> Event:
    return Event(row.id, row.kind, row.vm_id, row.owner_id, row.data, _utc(row.created_at))


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite drops it


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, kind: str, data: dict[str, Any], *, vm_id: str | None, owner_id: str | None,
                  at: datetime) -> Event:  # fmt: skip
        returning: list[Any] = [EventRow.id]
        if self.s.get_bind().dialect.name == "postgresql":
            await self.s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_ORDER_LOCK})
            # The id on the channel, sent when the transaction commits (never if it rolls back).
            returning.append(func.pg_notify(EVENT_CHANNEL, cast(EventRow.id, Text)))
        statement = insert(EventRow).values(kind=kind, vm_id=vm_id, owner_id=owner_id, data=data,
                                            created_at=at).returning(*returning)  # fmt: skip
        event_id = (await self.s.execute(statement)).one()[0]
        return Event(int(event_id), kind, vm_id, owner_id, data, at)

    async def since(self, last_id: int, limit: int) -> list[Event]:
        """The newest `limit` events after `last_id`, oldest first."""
        rows = await self.s.execute(
            select(EventRow).where(EventRow.id > last_id).order_by(EventRow.id.desc()).limit(limit)
        )
        return [_event(row) for row in reversed(rows.scalars().all())]

    async def after(self, last_id: int, limit: int) -> list[Event]:
        """The oldest `limit` events after `last_id`, oldest first (a follower's next page)."""
        rows = await self.s.execute(
            select(*_COLUMNS).where(EventRow.id > last_id).order_by(EventRow.id).limit(limit)
        )
        return [Event(id_, kind, vm_id, owner_id, data, _utc(at))
                for id_, kind, vm_id, owner_id, data, at in rows.all()]  # fmt: skip

    async def newest_id(self) -> int:
        return int(await self.s.scalar(select(func.max(EventRow.id))) or 0)

    async def oldest_id(self) -> int:
        return int(await self.s.scalar(select(func.min(EventRow.id))) or 0)

    async def prune(self, keep: int) -> int:
        """Delete all but the newest `keep` events; how many went."""
        newest = await self.newest_id()
        result = await self.s.execute(delete(EventRow).where(EventRow.id <= newest - keep))
        return int(result.rowcount)  # type: ignore[attr-defined]
