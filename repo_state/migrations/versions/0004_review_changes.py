"""Changes from review systems (change.source, review, url, depends_on, approved_by)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

# mypy: disable-error-code="attr-defined"

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change") as batch:
        batch.add_column(
            sa.Column(
                "source", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="git"
            )
        )
        batch.add_column(sa.Column("review", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(
            sa.Column("url", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("depends_on", sa.Text(), nullable=False, server_default="[]"))
        batch.add_column(
            sa.Column("approved_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch.create_index("ix_change_review", ["source", "review"])


def downgrade() -> None:
    with op.batch_alter_table("change") as batch:
        batch.drop_index("ix_change_review")
        batch.drop_column("approved_by")
        batch.drop_column("depends_on")
        batch.drop_column("url")
        batch.drop_column("review")
        batch.drop_column("source")
