"""actors: who made each ledger row and each resolution (the name of the API key); and an
index of the failed restocks, which the console lists and counts

Rows written before this revision keep ``actor`` null. The index is partial: failures are
few, and no other restock pays for it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stock_movements") as batch:
        batch.add_column(sa.Column("actor", sa.String(64), nullable=True))
    with op.batch_alter_table("restocks") as batch:
        batch.add_column(sa.Column("resolved_actor", sa.String(64), nullable=True))
    failed = sa.text("status = 'failed'")
    op.create_index(
        "ix_restocks_failed",
        "restocks",
        ["requested_at", "order_no"],
        postgresql_where=failed,
        sqlite_where=failed,
    )


def downgrade() -> None:
    op.drop_index("ix_restocks_failed", table_name="restocks")
    with op.batch_alter_table("restocks") as batch:
        batch.drop_column("resolved_actor")
    with op.batch_alter_table("stock_movements") as batch:
        batch.drop_column("actor")
