"""OperationRepository: operation rows in and out (the session's unit of work commits)."""

from __future__ import annotations

import builtins
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.domain.operations import Operation, OperationStatus
from voidvm_server.persistence.repositories import utc
from voidvm_server.persistence.tables import OperationRow

UNFINISHED = [OperationStatus.PENDING.value, OperationStatus.RUNNING.value]


def _operation(row: OperationRow) -> Operation:
    return Operation(
        id=row.id,
        type=row.type,
        status=OperationStatus(row.status),
        progress=row.progress,
        message=row.message,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        owner_id=row.owner_id,
        cancellable=row.cancellable,
        created_at=utc(row.created_at) or row.created_at,
        updated_at=utc(row.updated_at) or row.updated_at,
        finished_at=utc(row.finished_at),
        error=row.error,
        result=row.result,
    )


class OperationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, operation: Operation, worker_id: str | None = None) -> None:
        values = asdict(operation)
        values["status"] = operation.status.value
        self.session.add(OperationRow(**values, worker_id=worker_id))

    async def worker_of(self, operation_id: str) -> str | None:
        return await self.session.scalar(
            select(OperationRow.worker_id).where(OperationRow.id == operation_id)
        )

    async def progress_of(self, resource_id: str) -> str | None:
        """Whether the resource's operations are `unfinished` (one still pending or running),
        all `finished`, or None (it has none)."""
        statuses = set(
            await self.session.scalars(
                select(OperationRow.status).where(OperationRow.resource_id == resource_id)
            )
        )
        if not statuses:
            return None
        return "unfinished" if statuses & set(UNFINISHED) else "finished"

    async def unfinished(self) -> builtins.list[tuple[Operation, str | None]]:
        """Operations pending or running, each with the worker that runs it."""
        rows = await self.session.scalars(select(OperationRow).where(OperationRow.status.in_(UNFINISHED)))
        return [(_operation(row), row.worker_id) for row in rows]

    async def get(self, operation_id: str) -> Operation | None:
        row = await self.session.get(OperationRow, operation_id)
        return _operation(row) if row else None

    async def update_unfinished(self, operation_id: str, **values: Any) -> Operation | None:
        """Change an operation that has not finished yet; None when it has (or is gone): a
        finished operation never changes again, so a late progress report cannot undo a cancel."""
        result = await self.session.execute(
            update(OperationRow)
            .where(OperationRow.id == operation_id, OperationRow.status.in_(UNFINISHED))
            .values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        self.session.expire_all()
        return await self.get(operation_id)

    async def list(
        self,
        *,
        owner_id: str | None,
        status: str | None,
        type: str | None,
        resource_id: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[Operation], int]:
        conditions = []
        if owner_id is not None:
            conditions.append(OperationRow.owner_id == owner_id)
        if status:
            conditions.append(OperationRow.status == status)
        if type:
            conditions.append(OperationRow.type == type)
        if resource_id:
            conditions.append(OperationRow.resource_id == resource_id)
        query = select(OperationRow).where(*conditions)
        count = select(func.count()).select_from(OperationRow).where(*conditions)
        total = int(await self.session.scalar(count) or 0)
        rows = await self.session.scalars(
            query.order_by(OperationRow.created_at.desc(), OperationRow.id.desc()).offset(offset).limit(limit)
        )
        return [_operation(r) for r in rows], total

    async def prune(self, finished_before: datetime) -> int:
        """Delete the operations that finished before `finished_before`; how many went."""
        result = await self.session.execute(
            delete(OperationRow).where(
                OperationRow.status.not_in(UNFINISHED), OperationRow.finished_at < finished_before
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
