"""WorkerRepository: API worker rows and the WebSocket seats they hold (the session commits)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.persistence.tables import ApiWorkerRow, WebSocketSeatRow

# With the user's id hashed, the key of the PostgreSQL advisory lock that serializes one user's
# seat claims (SQLite has one writer at a time already). Only has to be VoidVM's own.
SEAT_LOCK_CLASS = 0x5653  # "VS"


class WorkerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, worker_id: str, host: str, pid: int, started_at: datetime, beat: float) -> None:
        self.s.add(ApiWorkerRow(id=worker_id, host=host, pid=pid, started_at=started_at, heartbeat_at=beat))
        await self.s.flush()

    async def beat(self, worker_id: str, beat: float) -> bool:
        """Renew a worker's heartbeat; False when its row is gone (declared dead meanwhile)."""
        result = await self.s.execute(
            update(ApiWorkerRow).where(ApiWorkerRow.id == worker_id).values(heartbeat_at=beat)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def remove(self, worker_id: str) -> None:
        await self.s.execute(delete(WebSocketSeatRow).where(WebSocketSeatRow.worker_id == worker_id))
        await self.s.execute(delete(ApiWorkerRow).where(ApiWorkerRow.id == worker_id))

    async def remove_dead(self, alive_after: float) -> int:
        """Forget the workers whose heartbeat stopped, and the seats they held; how many."""
        dead = select(ApiWorkerRow.id).where(ApiWorkerRow.heartbeat_at < alive_after)
        await self.s.execute(delete(WebSocketSeatRow).where(WebSocketSeatRow.worker_id.in_(dead)))
        result = await self.s.execute(delete(ApiWorkerRow).where(ApiWorkerRow.heartbeat_at < alive_after))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def alive(self, alive_after: float) -> int:
        query = select(func.count()).select_from(ApiWorkerRow).where(ApiWorkerRow.heartbeat_at >= alive_after)
        return int(await self.s.scalar(query) or 0)

    # -- seats -----------------------------------------------------------------------------------
    async def take_seat(self, worker_id: str, user_id: str, opened_at: datetime, alive_after: float,
                        limit: int) -> int | None:  # fmt: skip
        """A seat for one more socket of `user_id`, or None when the user holds `limit` already.
        The row is written before the count, in one transaction: the write lock (SQLite) or the
        user's advisory lock (PostgreSQL) makes parallel claims of one user take turns, so the
        cap is exact across workers. On None the caller must roll back (raise) the transaction."""
        if self.s.get_bind().dialect.name == "postgresql":
            await self.s.execute(text("SELECT pg_advisory_xact_lock(:cls, hashtext(:user))"),
                                 {"cls": SEAT_LOCK_CLASS, "user": user_id})  # fmt: skip
        seat = WebSocketSeatRow(worker_id=worker_id, user_id=user_id, opened_at=opened_at)
        self.s.add(seat)
        await self.s.flush()
        held = await self.s.scalar(
            select(func.count())
            .select_from(WebSocketSeatRow)
            .join(ApiWorkerRow, ApiWorkerRow.id == WebSocketSeatRow.worker_id)
            .where(WebSocketSeatRow.user_id == user_id, ApiWorkerRow.heartbeat_at >= alive_after)
        )
        return None if int(held or 0) > limit else int(seat.id)

    async def free_seat(self, seat_id: int) -> None:
        await self.s.execute(delete(WebSocketSeatRow).where(WebSocketSeatRow.id == seat_id))

    async def seats_of(self, user_id: str, alive_after: float) -> int:
        query = (
            select(func.count())
            .select_from(WebSocketSeatRow)
            .join(ApiWorkerRow, ApiWorkerRow.id == WebSocketSeatRow.worker_id)
            .where(WebSocketSeatRow.user_id == user_id, ApiWorkerRow.heartbeat_at >= alive_after)
        )
        return int(await self.s.scalar(query) or 0)
