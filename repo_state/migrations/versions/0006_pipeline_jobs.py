"""Job runs of a pipeline: the arch, the stage, the try (job_run.arch, stage, try_number, tries)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

# mypy: disable-error-code="attr-defined"

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_run") as batch:
        batch.add_column(
            sa.Column("arch", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("stage", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("try_number", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("tries", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("job_run") as batch:
        batch.drop_column("tries")
        batch.drop_column("try_number")
        batch.drop_column("stage")
        batch.drop_column("arch")
