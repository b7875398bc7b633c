"""events: what subscribers are told, with ids from the database

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 09:30:00

Events are written in the same transaction as the change they tell of, so a client resuming
from the last id it saw gets what it missed across restarts, and every process serving the API
reads the same sequence. The ids go on from where the earlier, clock-based ones (microseconds
since 1970) stood: a client that kept such an id and resumes from it must not take the new ids
for old ones (the SDKs drop events with ids at or below the last one they saw).
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("vm_id", sa.String(32), nullable=True),
        sa.Column("owner_id", sa.String(32), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    first = time.time_ns() // 1000
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', :seq)").bindparams(seq=first)
        )
    else:
        op.execute(
            sa.text("SELECT setval(pg_get_serial_sequence('events', 'id'), :seq)").bindparams(seq=first)
        )


def downgrade() -> None:
    op.drop_table("events")
