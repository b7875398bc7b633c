"""images say whether their guest serves SSH

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00

A VM's SSH port is forwarded and shown only when its image's guest runs an SSH server. Disks
(catalog cloud images, imports) are taken to; kernel images (the built-in busybox guest, the only
kind `image build-tiny` makes) do not.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("images", sa.Column("serves_ssh", sa.Boolean(), nullable=False, server_default=sa.true()))
    images = sa.table("images", sa.column("format", sa.String()), sa.column("serves_ssh", sa.Boolean()))
    op.execute(images.update().where(images.c.format == "kernel").values(serves_ssh=False))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:  # SQLite rebuilds the table
        batch.drop_column("serves_ssh")
