"""Tested post items and bootstrap (item.bootstrap, forced_by, config_digest); job warnings

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

# mypy: disable-error-code="attr-defined"

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(
            sa.Column("bootstrap", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("forced_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(
            sa.Column("config_digest", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
    with op.batch_alter_table("job_run") as batch:
        batch.add_column(sa.Column("warnings", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("job_run") as batch:
        batch.drop_column("warnings")
    with op.batch_alter_table("item") as batch:
        batch.drop_column("config_digest")
        batch.drop_column("forced_by")
        batch.drop_column("bootstrap")
