"""Repositories: translate between table rows and domain records, one per aggregate.

Each takes the `AsyncSession` of the current unit of work; none commits on its own.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, Row, Select, String, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.domain.models import (
    VM,
    ApiToken,
    AuditEntry,
    Image,
    ImageFormat,
    ImageStatus,
    Quota,
    Role,
    Usage,
    User,
    UserStatus,
    VMStatus,
)
from voidvm_server.errors import ConflictError
from voidvm_server.persistence.plain_reads import PlainRead, fetch_all
from voidvm_server.persistence.tables import (
    ApiTokenRow,
    AuditRow,
    ConfigRow,
    ImageRow,
    RevokedSessionRow,
    UserRow,
    VMRow,
)


def utc(value: datetime | None) -> datetime | None:
    """SQLite drops the zone; every time we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# The hot reads are written against the tables' columns, not the mapped classes: a Core statement
# skips the ORM's compile and per-object steps (a third of a 20-VM page's cost in SQLAlchemy), and
# its Row answers the same attribute names, so both kinds go through the same converters.
_users = UserRow.__table__.c
_vms = VMRow.__table__.c
_revoked = RevokedSessionRow.__table__.c
AnyRow = Row[*tuple[Any, ...]]


def _user(row: UserRow | AnyRow) -> User:
    return User(
        id=row.id,
        username=row.username,
        email=row.email,
        password_hash=row.password_hash,
        role=Role(row.role),
        status=UserStatus(row.status),
        quota=Quota(row.max_vms, row.max_cpus, row.max_memory_mb, row.max_disk_gb),
        usage=Usage(row.used_vms, row.used_cpus, row.used_memory_mb, row.used_disk_gb),
        token_version=row.token_version,
        failed_logins=row.failed_logins,
        locked_until=utc(row.locked_until),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        last_login_at=utc(row.last_login_at),
    )


# Built and compiled once: every authenticated request runs it (see persistence/plain_reads.py).
_USER_WITH_SESSION = PlainRead(
    select(*_users, _revoked.session_id.label("revoked_session"))
    .outerjoin(RevokedSessionRow.__table__, _revoked.session_id == bindparam("session_id"))
    .where(_users.id == bindparam("user_id"))
)


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> User | None:
        row = await self.session.get(UserRow, user_id)
        return _user(row) if row else None

    async def get_with_session(self, user_id: str, session_id: str) -> tuple[User | None, bool]:
        """The user and whether this login session was revoked, in one query (every request)."""
        params = {"user_id": user_id, "session_id": session_id}
        rows = await fetch_all(self.session, _USER_WITH_SESSION, params)
        if not rows:
            return None, False
        return _user(rows[0]), rows[0].revoked_session is not None

    async def by_username(self, username: str) -> User | None:
        row = await self.session.scalar(select(UserRow).where(UserRow.username == username))
        return _user(row) if row else None

    async def count(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(UserRow)) or 0)

    async def list(self, offset: int, limit: int) -> tuple[list[User], int]:
        total = await self.count()
        rows = await self.session.scalars(
            select(UserRow).order_by(UserRow.created_at, UserRow.id).offset(offset).limit(limit)
        )
        return [_user(r) for r in rows], total

    async def add(self, user: User) -> None:
        self.session.add(
            UserRow(
                id=user.id,
                username=user.username,
                email=user.email,
                password_hash=user.password_hash,
                role=user.role.value,
                status=user.status.value,
                token_version=user.token_version,
                failed_logins=0,
                locked_until=None,
                max_vms=user.quota.max_vms,
                max_cpus=user.quota.max_cpus,
                max_memory_mb=user.quota.max_memory_mb,
                max_disk_gb=user.quota.max_disk_gb,
                used_vms=0,
                used_cpus=0,
                used_memory_mb=0,
                used_disk_gb=0,
                created_at=user.created_at,
                updated_at=user.updated_at,
                last_login_at=None,
            )
        )
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise ConflictError("A user with that username already exists", code="NAME_CONFLICT") from exc

    async def update(self, user_id: str, **values: Any) -> None:
        await self.session.execute(update(UserRow).where(UserRow.id == user_id).values(**values))

    async def delete(self, user_id: str) -> None:
        await self.session.execute(delete(UserRow).where(UserRow.id == user_id))

    async def reserve(self, user_id: str, cpus: int, memory_mb: int, disk_gb: int) -> bool:
        """Take one VM's worth of quota in a single conditional UPDATE: atomic on every database."""
        result = await self.session.execute(
            update(UserRow)
            .where(
                UserRow.id == user_id,
                UserRow.used_vms + 1 <= UserRow.max_vms,
                UserRow.used_cpus + cpus <= UserRow.max_cpus,
                UserRow.used_memory_mb + memory_mb <= UserRow.max_memory_mb,
                UserRow.used_disk_gb + disk_gb <= UserRow.max_disk_gb,
            )
            .values(
                used_vms=UserRow.used_vms + 1,
                used_cpus=UserRow.used_cpus + cpus,
                used_memory_mb=UserRow.used_memory_mb + memory_mb,
                used_disk_gb=UserRow.used_disk_gb + disk_gb,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def resize(self, user_id: str, cpus: int, memory_mb: int, disk_gb: int) -> bool:
        """Change reserved resources by the given deltas; refused if it would pass the quota."""
        result = await self.session.execute(
            update(UserRow)
            .where(
                UserRow.id == user_id,
                UserRow.used_cpus + cpus <= UserRow.max_cpus,
                UserRow.used_memory_mb + memory_mb <= UserRow.max_memory_mb,
                UserRow.used_disk_gb + disk_gb <= UserRow.max_disk_gb,
            )
            .values(
                used_cpus=UserRow.used_cpus + cpus,
                used_memory_mb=UserRow.used_memory_mb + memory_mb,
                used_disk_gb=UserRow.used_disk_gb + disk_gb,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def release(self, user_id: str, cpus: int, memory_mb: int, disk_gb: int) -> None:
        await self.session.execute(
            update(UserRow)
            .where(UserRow.id == user_id)
            .values(
                used_vms=UserRow.used_vms - 1,
                used_cpus=UserRow.used_cpus - cpus,
                used_memory_mb=UserRow.used_memory_mb - memory_mb,
                used_disk_gb=UserRow.used_disk_gb - disk_gb,
            )
        )


def _token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        token_hash=row.token_hash,
        created_at=_utc(row.created_at),
        expires_at=utc(row.expires_at),
        last_used_at=utc(row.last_used_at),
    )


class TokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: ApiToken) -> None:
        self.session.add(
            ApiTokenRow(
                id=token.id,
                user_id=token.user_id,
                name=token.name,
                prefix=token.prefix,
                token_hash=token.token_hash,
                created_at=token.created_at,
                expires_at=token.expires_at,
                last_used_at=None,
            )
        )
        await self.session.flush()

    async def get(self, token_id: str) -> ApiToken | None:
        row = await self.session.get(ApiTokenRow, token_id)
        return _token(row) if row else None

    async def by_hash(self, token_hash: str) -> ApiToken | None:
        row = await self.session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash))
        return _token(row) if row else None

    async def for_user(self, user_id: str) -> builtins.list[ApiToken]:
        rows = await self.session.scalars(
            select(ApiTokenRow).where(ApiTokenRow.user_id == user_id).order_by(ApiTokenRow.created_at)
        )
        return [_token(r) for r in rows]

    async def delete(self, user_id: str, token_id: str) -> bool:
        result = await self.session.execute(
            delete(ApiTokenRow).where(ApiTokenRow.id == token_id, ApiTokenRow.user_id == user_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete_for_user(self, user_id: str) -> None:
        await self.session.execute(delete(ApiTokenRow).where(ApiTokenRow.user_id == user_id))

    async def touch(self, token_id: str, when: datetime) -> None:
        await self.session.execute(
            update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=when)
        )

    async def revoke_session(self, session_id: str, expires_at: datetime) -> bool:
        """Record a session as ended; True only for the caller that recorded it first (one
        INSERT that skips an existing row, so parallel callers never collide)."""
        dialect = self.session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = (
            insert(RevokedSessionRow)
            .values(session_id=session_id, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["session_id"])
        )
        result = await self.session.execute(statement)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def purge_revoked(self, now: datetime) -> int:
        result = await self.session.execute(
            delete(RevokedSessionRow).where(RevokedSessionRow.expires_at < now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def _image(row: ImageRow) -> Image:
    return Image(
        id=row.id,
        name=row.name,
        aliases=list(row.aliases or []),
        format=ImageFormat(row.format),
        status=ImageStatus(row.status),
        status_reason=row.status_reason,
        size_bytes=row.size_bytes,
        virtual_size_bytes=row.virtual_size_bytes,
        is_default=row.is_default,
        source=row.source,
        created_at=_utc(row.created_at),
        files=dict(row.files or {}),
        kernel_cmdline=row.kernel_cmdline,
        serves_ssh=row.serves_ssh,
    )


class ImageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list(self) -> list[Image]:
        rows = await self.session.scalars(select(ImageRow).order_by(ImageRow.name))
        return [_image(r) for r in rows]

    async def get(self, image_id: str) -> Image | None:
        row = await self.session.get(ImageRow, image_id)
        return _image(row) if row else None

    async def by_name(self, name: str) -> Image | None:
        row = await self.session.scalar(select(ImageRow).where(ImageRow.name == name))
        return _image(row) if row else None

    async def add(self, image: Image) -> None:
        self.session.add(
            ImageRow(
                id=image.id,
                name=image.name,
                aliases=image.aliases,
                format=image.format.value,
                status=image.status.value,
                status_reason=image.status_reason,
                size_bytes=image.size_bytes,
                virtual_size_bytes=image.virtual_size_bytes,
                is_default=image.is_default,
                source=image.source,
                files=image.files,
                kernel_cmdline=image.kernel_cmdline,
                serves_ssh=image.serves_ssh,
                created_at=image.created_at,
            )
        )
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise ConflictError("An image with that name already exists", code="NAME_CONFLICT") from exc

    async def update(self, image_id: str, **values: Any) -> None:
        await self.session.execute(update(ImageRow).where(ImageRow.id == image_id).values(**values))

    async def set_default(self, image_id: str) -> None:
        await self.session.execute(update(ImageRow).values(is_default=ImageRow.id == image_id))

    async def delete(self, image_id: str) -> None:
        await self.session.execute(delete(ImageRow).where(ImageRow.id == image_id))

    async def in_use(self, image_id: str) -> bool:
        count = await self.session.scalar(
            select(func.count()).select_from(VMRow).where(VMRow.image_id == image_id)
        )
        return bool(count)


def _vm(row: VMRow | AnyRow, owner_name: str) -> VM:
    return VM(
        id=row.id,
        name=row.name,
        description=row.description,
        status=VMStatus(row.status),
        status_reason=row.status_reason,
        cpu=row.cpu,
        memory_mb=row.memory_mb,
        disk_gb=row.disk_gb,
        os=row.os,
        image_id=row.image_id,
        owner_id=row.owner_id,
        owner_name=owner_name,
        ssh_port=row.ssh_port,
        pid=row.pid,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        started_at=utc(row.started_at),
    )


SORTABLE = {
    "name": _vms.name,
    "created_at": _vms.created_at,
    "updated_at": _vms.updated_at,
    "status": _vms.status,
    "cpu": _vms.cpu,
    "memory": _vms.memory_mb,
    "disk": _vms.disk_gb,
}


# The VM's columns and its owner's name as `owner_username`; built once, narrowed per query.
_VM_WITH_OWNER: Select[Any] = select(*_vms, _users.username.label("owner_username")).join(
    UserRow.__table__, _users.id == _vms.owner_id
)


@functools.lru_cache(maxsize=256)
def _list_reads(
    by_owner: bool, statuses: int, search: bool, sort: tuple[tuple[str, bool], ...]
) -> tuple[PlainRead, PlainRead]:
    """A list's page and its count, for one shape of query (whether it filters by owner, how
    many statuses, whether it searches, the order), with every value a parameter: built and
    compiled once per shape. The page's ids come first, from the index alone (OFFSET skips index
    entries, not joined rows), then only those rows with their owners; the count from the index."""
    conditions: list[Any] = []
    if by_owner:
        conditions.append(_vms.owner_id == bindparam("owner_id"))
    if statuses:
        conditions.append(_vms.status.in_([bindparam(f"status_{i}", type_=String) for i in range(statuses)]))
    if search:
        pattern = bindparam("pattern", type_=String)
        conditions.append(
            or_(_vms.name.ilike(pattern, escape="\\"), _vms.description.ilike(pattern, escape="\\"))
        )
    order = [*(SORTABLE[key].desc() if desc else SORTABLE[key].asc() for key, desc in sort), _vms.id]
    page_ids = (
        select(_vms.id)
        .where(*conditions)
        .order_by(*order)
        .offset(bindparam("offset", type_=Integer))
        .limit(bindparam("limit", type_=Integer))
    )
    page = _VM_WITH_OWNER.where(_vms.id.in_(page_ids)).order_by(*order)
    count = select(func.count()).select_from(VMRow.__table__).where(*conditions)
    return PlainRead(page), PlainRead(count)


class VMRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _select(self) -> Select[Any]:
        return _VM_WITH_OWNER

    async def get(self, vm_id: str) -> VM | None:
        row = (await self.session.execute(self._select().where(_vms.id == vm_id))).first()
        return _vm(row, row.owner_username) if row else None

    async def add(self, vm: VM) -> None:
        self.session.add(
            VMRow(
                id=vm.id,
                name=vm.name,
                description=vm.description,
                status=vm.status.value,
                status_reason=vm.status_reason,
                cpu=vm.cpu,
                memory_mb=vm.memory_mb,
                disk_gb=vm.disk_gb,
                os=vm.os,
                image_id=vm.image_id,
                owner_id=vm.owner_id,
                ssh_port=None,
                pid=None,
                created_at=vm.created_at,
                updated_at=vm.updated_at,
                started_at=None,
            )
        )
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise ConflictError(f"You already have a VM named '{vm.name}'", code="NAME_CONFLICT") from exc

    async def update(self, vm_id: str, **values: Any) -> None:
        try:
            await self.session.execute(update(VMRow).where(VMRow.id == vm_id).values(**values))
        except IntegrityError as exc:
            raise ConflictError("You already have a VM with that name", code="NAME_CONFLICT") from exc

    async def change_status(self, vm_id: str, expected: VMStatus, **values: Any) -> bool:
        """Compare-and-set: write `values` only while the row's status is still `expected`; False
        when another writer changed it first (or the row is gone)."""
        result = await self.session.execute(
            update(VMRow).where(VMRow.id == vm_id, VMRow.status == expected.value).values(**values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete(self, vm_id: str) -> bool:
        """True when the row was there (and is now gone)."""
        result = await self.session.execute(delete(VMRow).where(VMRow.id == vm_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def list(
        self,
        *,
        owner_id: str | None,
        status: Sequence[str] | None,
        search: str | None,
        sort: Sequence[tuple[str, bool]],
        offset: int,
        limit: int,
    ) -> tuple[list[VM], int]:
        statuses = tuple(dict.fromkeys(status or ()))
        page_read, count_read = _list_reads(owner_id is not None, len(statuses), bool(search), tuple(sort))
        params: dict[str, Any] = {"offset": offset, "limit": limit, "owner_id": owner_id}
        params |= {f"status_{i}": value for i, value in enumerate(statuses)}
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["pattern"] = f"%{escaped}%"
        rows = await fetch_all(self.session, page_read, params)
        vms = [_vm(r, r.owner_username) for r in rows]
        if rows and len(rows) < limit:  # the last page: the total is known without counting
            return vms, offset + len(rows)
        if not rows and offset == 0:
            return vms, 0
        total = int((await fetch_all(self.session, count_read, params))[0][0] or 0)
        # Two statements: a delete in between must not leave a total smaller than the page shows.
        return vms, max(total, offset + len(rows)) if rows else total

    async def all(self) -> builtins.list[VM]:
        return [_vm(r, r.owner_username) for r in (await self.session.execute(self._select())).all()]

    async def ssh_ports(self) -> dict[int, str]:
        """Every SSH port a VM keeps (running or not), with the VM's id."""
        rows = await self.session.execute(select(_vms.ssh_port, _vms.id).where(_vms.ssh_port.is_not(None)))
        return {int(port): vm_id for port, vm_id in rows.all()}

    async def count_by_status(self) -> dict[str, int]:
        rows = await self.session.execute(select(_vms.status, func.count()).group_by(_vms.status))
        return {status: int(n) for status, n in rows.all()}


def _audit(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        timestamp=_utc(row.timestamp),
        level=row.level,
        user_id=row.user_id,
        username=row.username,
        client_ip=row.client_ip,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        result=row.result,
        message=row.message,
        request_id=row.request_id,
    )


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, **values: Any) -> None:
        self.session.add(AuditRow(**values))

    async def list(
        self,
        *,
        user_id: str | None,
        level: str | None,
        action: str | None,
        target_id: str | None,
        since: datetime | None,
        until: datetime | None,
        offset: int,
        limit: int,
    ) -> tuple[list[AuditEntry], int]:
        query = select(AuditRow)
        count = select(func.count()).select_from(AuditRow)
        conditions = []
        if user_id:
            conditions.append(AuditRow.user_id == user_id)
        if level:
            conditions.append(AuditRow.level == level)
        if action:
            conditions.append(AuditRow.action == action)
        if target_id:
            conditions.append(AuditRow.target_id == target_id)
        if since:
            conditions.append(AuditRow.timestamp >= since)
        if until:
            conditions.append(AuditRow.timestamp <= until)
        for condition in conditions:
            query = query.where(condition)
            count = count.where(condition)
        total = int(await self.session.scalar(count) or 0)
        rows = await self.session.scalars(query.order_by(AuditRow.id.desc()).offset(offset).limit(limit))
        return [_audit(r) for r in rows], total

    async def count_since(self, since: datetime) -> dict[str, int]:
        rows = await self.session.execute(
            select(AuditRow.action, func.count()).where(AuditRow.timestamp >= since).group_by(AuditRow.action)
        )
        return {action: int(n) for action, n in rows.all()}


class ConfigRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, key: str) -> dict[str, object] | None:
        row = await self.session.get(ConfigRow, key)
        return dict(row.value) if row else None

    async def put(self, key: str, value: dict[str, object], now: datetime) -> None:
        row = await self.session.get(ConfigRow, key)
        if row is None:
            self.session.add(ConfigRow(key=key, value=value, updated_at=now))
        else:
            row.value = value
            row.updated_at = now
