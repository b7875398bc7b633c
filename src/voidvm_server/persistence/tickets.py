"""TicketRepository: console ticket rows in and out (the session's unit of work commits)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.auth.principal import Grant
from voidvm_server.persistence.repositories import utc
from voidvm_server.persistence.tables import ConsoleTicketRow


class TicketRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, digest: str, grant: Grant, vm_id: str, kind: str, expires_at: float) -> None:
        self.s.add(ConsoleTicketRow(
            digest=digest, vm_id=vm_id, kind=kind, expires_at=expires_at, user_id=grant.user_id,
            token_version=grant.token_version, session_id=grant.session_id,
            api_token_id=grant.api_token_id, credential_expires_at=grant.expires_at,
        ))  # fmt: skip
        await self.s.flush()

    async def take(self, digest: str) -> tuple[Grant, str, str, float] | None:
        """Delete one ticket and return it (grant, vm id, kind, expiry): of two callers taking
        the same ticket at once, exactly one gets it."""
        row = (await self.s.execute(
            delete(ConsoleTicketRow).where(ConsoleTicketRow.digest == digest).returning(
                ConsoleTicketRow.user_id, ConsoleTicketRow.token_version, ConsoleTicketRow.session_id,
                ConsoleTicketRow.api_token_id, ConsoleTicketRow.credential_expires_at,
                ConsoleTicketRow.vm_id, ConsoleTicketRow.kind, ConsoleTicketRow.expires_at,
            )
        )).one_or_none()  # fmt: skip
        if row is None:
            return None
        grant = Grant(row[0], row[1], row[2], row[3], utc(row[4]))
        return grant, row[5], row[6], row[7]

    async def sweep(self, before: float) -> int:
        result = await self.s.execute(delete(ConsoleTicketRow).where(ConsoleTicketRow.expires_at < before))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def count(self) -> int:
        return int(await self.s.scalar(select(func.count()).select_from(ConsoleTicketRow)) or 0)
