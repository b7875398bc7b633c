"""vm list indexes in the list's own order

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 03:20:00

The list's default order is newest first with the id as tie-break: indexes in exactly that order
(for everyone, and per owner) let a page be read straight off the index, and its ids be taken from
the index alone before the rows are joined, instead of sorting every matching row.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_vms_created_at", table_name="vms")
    op.drop_index("ix_vms_owner_created", table_name="vms")
    op.create_index("ix_vms_newest_first", "vms", [sa.text("created_at DESC"), "id"])
    op.create_index("ix_vms_owner_newest_first", "vms", ["owner_id", sa.text("created_at DESC"), "id"])


def downgrade() -> None:
    op.drop_index("ix_vms_owner_newest_first", table_name="vms")
    op.drop_index("ix_vms_newest_first", table_name="vms")
    op.create_index("ix_vms_owner_created", "vms", ["owner_id", "created_at"])
    op.create_index("ix_vms_created_at", "vms", ["created_at"])
