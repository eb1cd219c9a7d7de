"""Builds of an item as a set over (named build, package): item_build; job_run.build;
build.inputs and build.waits_for (a package's input digest, the builds it waits for);
build.inputs and build.waits_for (a package's input digest, the builds it waits for)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

# mypy: disable-error-code="attr-defined"

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_build",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("build_name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("package", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("reused", sa.Boolean(), nullable=False),
        sa.Column("tested_state", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("item_id", "attempt", "build_name", "package", "purpose"),
    )
    with op.batch_alter_table("item_build") as batch:
        batch.create_index(batch.f("ix_item_build_item_id"), ["item_id"], unique=False)
    with op.batch_alter_table("job_run") as batch:
        batch.add_column(
            sa.Column(
                "build", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""
            )
        )
    with op.batch_alter_table("build") as batch:
        batch.add_column(
            sa.Column(
                "inputs", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default=""
            )
        )
        batch.add_column(sa.Column("waits_for", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("build") as batch:
        batch.drop_column("waits_for")
        batch.drop_column("inputs")
    with op.batch_alter_table("job_run") as batch:
        batch.drop_column("build")
    with op.batch_alter_table("item_build") as batch:
        batch.drop_index(batch.f("ix_item_build_item_id"))
    op.drop_table("item_build")
