"""Draft final builds ahead of the tip (item.draft, item.draft_build_id)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

# mypy: disable-error-code="attr-defined"

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(
            sa.Column(
                "draft", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="none"
            )
        )
        batch.add_column(sa.Column("draft_build_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.drop_column("draft_build_id")
        batch.drop_column("draft")
