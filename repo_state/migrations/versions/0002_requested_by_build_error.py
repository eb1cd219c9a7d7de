"""Who asked (the API token's name on deliveries and admin-made generations); build errors

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

# sqlmodel imports sqlmodel.sql.sqltypes itself, but strict mypy sees only the submodules
# a file imports; migrations are not edited, so mypy is told here instead.
# mypy: disable-error-code="attr-defined"

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(
            sa.Column("requested_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
    with op.batch_alter_table("generation") as batch:
        batch.add_column(
            sa.Column("requested_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
    with op.batch_alter_table("build") as batch:
        batch.add_column(
            sa.Column(
                "error", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("build") as batch:
        batch.drop_column("error")
    with op.batch_alter_table("generation") as batch:
        batch.drop_column("requested_by")
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("requested_by")
