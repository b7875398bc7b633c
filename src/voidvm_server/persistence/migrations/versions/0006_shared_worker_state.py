"""console_tickets, api_workers, websocket_seats: what every API worker must see alike

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:10:00

Console tickets and the count of each user's open WebSockets lived in one process's memory, so
with several API workers a ticket issued by one could not open a console through another, and a
user could hold 10 sockets on each. They are rows now: tickets are deleted as they are redeemed;
a seat is a socket held open by a worker, which counts only while its worker's heartbeat is fresh
(a worker killed with its sockets frees their seats that way). An operation records the worker
that runs it, so one cut short by that worker's death is failed while the others run on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_tickets",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("vm_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("api_token_id", sa.String(32), nullable=True),
        sa.Column("credential_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "api_workers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "websocket_seats",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("worker_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_websocket_seats_user", "websocket_seats", ["user_id"])
    op.create_index("ix_websocket_seats_worker", "websocket_seats", ["worker_id"])
    op.add_column("operations", sa.Column("worker_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("worker_id")
    op.drop_table("websocket_seats")
    op.drop_table("api_workers")
    op.drop_table("console_tickets")
