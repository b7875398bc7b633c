"""Read-only facts about the installation: VM counts by state, recent event counts."""

from __future__ import annotations

from datetime import datetime

from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import AuditRepository, VMRepository


class SystemService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def vm_counts(self) -> dict[str, int]:
        async with self.db.reading() as s:
            return await VMRepository(s).count_by_status()

    async def event_counts(self, since: datetime) -> dict[str, int]:
        # A range scan that grows with the audit log: off the event loop (not `reading()`).
        async with self.db.session() as s:
            return await AuditRepository(s).count_since(since)
