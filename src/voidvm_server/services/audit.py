"""The audit log: who did what to which resource, with what result."""

from __future__ import annotations

import logging
from datetime import datetime

from voidvm_server.domain.models import AuditEntry, User
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import AuditRepository
from voidvm_server.services import context
from voidvm_server.services.clock import now

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        action: str,
        *,
        user: User | None,
        target_type: str | None = None,
        target_id: str | None = None,
        result: str = "success",
        message: str = "",
        username: str | None = None,
    ) -> None:
        level = "info" if result == "success" else "warning"
        try:
            async with self.db.session() as s:
                await AuditRepository(s).add(
                    timestamp=now(),
                    level=level,
                    user_id=user.id if user else None,
                    username=user.username if user else username,
                    client_ip=context.client_ip.get(),
                    action=action,
                    target_type=target_type,
                    target_id=target_id,
                    result=result,
                    message=message[:1000],
                    request_id=context.request_id.get(),
                )
        except Exception:  # the audit log must never turn a success into a failure
            log.exception("Could not write the audit entry for %s", action)

    async def list(
        self,
        *,
        user_id: str | None,
        level: str | None,
        action: str | None,
        target_id: str | None,
        since: datetime | None,
        until: datetime | None,
        page: int,
        limit: int,
    ) -> tuple[list[AuditEntry], int]:
        async with self.db.reading() as s:
            return await AuditRepository(s).list(
                user_id=user_id,
                level=level,
                action=action,
                target_id=target_id,
                since=since,
                until=until,
                offset=(page - 1) * limit,
                limit=limit,
            )
