"""SQLAlchemy table definitions. Migrations in `migrations/versions` must match these."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    max_vms: Mapped[int] = mapped_column(Integer)
    max_cpus: Mapped[int] = mapped_column(Integer)
    max_memory_mb: Mapped[int] = mapped_column(Integer)
    max_disk_gb: Mapped[int] = mapped_column(Integer)
    # Reserved by this user's VMs; changed only by conditional UPDATEs so quotas never overshoot.
    used_vms: Mapped[int] = mapped_column(Integer, default=0)
    used_cpus: Mapped[int] = mapped_column(Integer, default=0)
    used_memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    used_disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RevokedSessionRow(Base):
    """A login session (shared by an access token and its refresh token) that was ended."""

    __tablename__ = "revoked_sessions"
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ImageRow(Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    format: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    virtual_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    is_default: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(Text)
    files: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    kernel_cmdline: Mapped[str | None] = mapped_column(Text)
    serves_ssh: Mapped[bool] = mapped_column(default=True, server_default=true())  # migration 0003
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VMRow(Base):
    __tablename__ = "vms"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_vms_owner_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    cpu: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    os: Mapped[str] = mapped_column(String(64))
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    ssh_port: Mapped[int | None] = mapped_column(Integer)
    pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# In the list's default order (newest first, the id breaking ties), for everyone and per owner: a
# page's ids come straight off the index (migration 0002).
Index("ix_vms_newest_first", VMRow.created_at.desc(), VMRow.id)
Index("ix_vms_owner_newest_first", VMRow.owner_id, VMRow.created_at.desc(), VMRow.id)


class AuditRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    level: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String(32), index=True)
    username: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64), index=True)
    result: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))


class ConfigRow(Base):
    """Live configuration overrides set through `PUT /config`, one JSON document per key."""

    __tablename__ = "config"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, object]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OperationRow(Base):
    """Long work: an image pull, a `wait: false` action (migration 0004)."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    resource_type: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(64), index=True)
    owner_id: Mapped[str | None] = mapped_column(String(32), index=True)
    cancellable: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[dict[str, object] | None] = mapped_column(JSON)
    result: Mapped[dict[str, object] | None] = mapped_column(JSON)
    worker_id: Mapped[str | None] = mapped_column(String(32))  # the API worker running it (0006)


Index("ix_operations_newest_first", OperationRow.created_at.desc(), OperationRow.id)


class EventRow(Base):
    """What subscribers are told, in the order it happened (migration 0005). The id is the
    `eventId` clients resume from: AUTOINCREMENT on SQLite, so an id is never handed out twice,
    even after the newest rows were pruned."""

    __tablename__ = "events"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (SQLAlchemy reads it once)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    vm_id: Mapped[str | None] = mapped_column(String(32))
    owner_id: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsoleTicketRow(Base):
    """A console ticket not yet redeemed (migration 0006): in the database, so any API worker
    may redeem what another issued, exactly once. The secret is never stored, only its digest,
    and the credential it was issued under only as what it stands for (`auth.principal.Grant`)."""

    __tablename__ = "console_tickets"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    vm_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(8))
    expires_at: Mapped[float] = mapped_column(Double)  # seconds since 1970
    user_id: Mapped[str] = mapped_column(String(32))
    token_version: Mapped[int] = mapped_column(Integer)
    session_id: Mapped[str | None] = mapped_column(String(64))
    api_token_id: Mapped[str | None] = mapped_column(String(32))
    credential_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiWorkerRow(Base):
    """A running API worker process (migration 0006); alive while `heartbeat_at` (seconds since
    1970) is fresh."""

    __tablename__ = "api_workers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[float] = mapped_column(Double)


class WebSocketSeatRow(Base):
    """An authenticated WebSocket held open by a worker, counted against its user's cap."""

    __tablename__ = "websocket_seats"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (SQLAlchemy reads it once)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(32))
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


Index("ix_websocket_seats_user", WebSocketSeatRow.user_id)
Index("ix_websocket_seats_worker", WebSocketSeatRow.worker_id)
