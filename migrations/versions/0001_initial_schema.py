"""initial schema: stock, its ledger, sync executions, restocks

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MALLS = "mall IN ('rakuten', 'yahoo', 'amazon')"


def _at(name: str) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "stock",
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_stock")),
    )
    op.create_table(
        "stock_movements",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("quantity_after", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("order_no", sa.String(64), nullable=True),
        _at("at"),
        sa.CheckConstraint(
            "reason IN ('set', 'sync_execution', 'restock', 'adjustment', 'delete')",
            name=op.f("ck_stock_movements_reason"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_movements")),
    )
    op.create_index("ix_stock_movements_sku_id", "stock_movements", ["sku", "id"])
    op.create_table(
        "sync_executions",
        sa.Column("order_no", sa.String(64), nullable=False),
        sa.Column("mall", sa.String(16), nullable=False),
        _at("executed_at"),
        _at("recorded_at"),
        sa.CheckConstraint(MALLS, name=op.f("ck_sync_executions_mall")),
        sa.PrimaryKeyConstraint("order_no", name=op.f("pk_sync_executions")),
    )
    op.create_table(
        "sync_execution_lines",
        sa.Column("order_no", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_sync_execution_lines_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["order_no"],
            ["sync_executions.order_no"],
            name=op.f("fk_sync_execution_lines_order_no_sync_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_no", "sku", name=op.f("pk_sync_execution_lines")),
    )
    op.create_table(
        "restocks",
        sa.Column("order_no", sa.String(64), nullable=False),
        sa.Column("mall", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        _at("requested_at"),
        _at("completed_at"),
        sa.Column("repeat_requests", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "code IN ('restored', 'mall_mismatch', 'product_not_found')",
            name=op.f("ck_restocks_code"),
        ),
        sa.CheckConstraint(MALLS, name=op.f("ck_restocks_mall")),
        sa.CheckConstraint(
            "status IN ('restored', 'failed', 'resolved')", name=op.f("ck_restocks_status")
        ),
        sa.PrimaryKeyConstraint("order_no", name=op.f("pk_restocks")),
    )
    op.create_table(
        "restock_lines",
        sa.Column("order_no", sa.String(64), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("missing", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_no"],
            ["restocks.order_no"],
            name=op.f("fk_restock_lines_order_no_restocks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_no", "sku", name=op.f("pk_restock_lines")),
    )


def downgrade() -> None:
    op.drop_table("restock_lines")
    op.drop_table("restocks")
    op.drop_table("sync_execution_lines")
    op.drop_table("sync_executions")
    op.drop_index("ix_stock_movements_sku_id", table_name="stock_movements")
    op.drop_table("stock_movements")
    op.drop_table("stock")
