"""operations: resolutions, adjustment notes, and the change feed's position

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("restocks") as batch:
        batch.add_column(sa.Column("resolution_note", sa.String(1000), nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_restocks_requested_at_order_no", "restocks", ["requested_at", "order_no"])
    with op.batch_alter_table("stock_movements") as batch:
        # The writing transaction's id (PostgreSQL), which orders the change feed safely.
        batch.add_column(
            sa.Column("txid", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("note", sa.String(200), nullable=True))
    op.create_index("ix_stock_movements_txid_id", "stock_movements", ["txid", "id"])


def downgrade() -> None:
    op.drop_index("ix_stock_movements_txid_id", table_name="stock_movements")
    with op.batch_alter_table("stock_movements") as batch:
        batch.drop_column("note")
        batch.drop_column("txid")
    op.drop_index("ix_restocks_requested_at_order_no", table_name="restocks")
    with op.batch_alter_table("restocks") as batch:
        batch.drop_column("resolved_at")
        batch.drop_column("resolved_by")
        batch.drop_column("resolution_note")
