"""The schema as SQLAlchemy Core tables, shared by PostgreSQL and SQLite.

Alembic migrations are the schema of record; a test proves these tables agree with them.
"""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

MALLS = "('rakuten', 'yahoo', 'amazon')"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on both dialects (SQLite stores no offset of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


# SQLite autoincrements only an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

stock = sa.Table(
    "stock",
    metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

stock_movements = sa.Table(
    "stock_movements",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("delta", sa.BigInteger, nullable=False),
    sa.Column("quantity_after", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("order_no", sa.String(64), nullable=True),
    sa.Column("at", UTCDateTime, nullable=False),
    # The writing transaction's id on PostgreSQL (0 on SQLite): the change feed's order.
    sa.Column("txid", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("note", sa.String(200), nullable=True),
    sa.Column("actor", sa.String(64), nullable=True),  # the API key's name; null: none
    sa.CheckConstraint(
        "reason IN ('set', 'sync_execution', 'restock', 'adjustment', 'delete')", name="reason"
    ),
    sa.Index("ix_stock_movements_sku_id", "sku", "id"),
    sa.Index("ix_stock_movements_txid_id", "txid", "id"),
)

sync_executions = sa.Table(
    "sync_executions",
    metadata,
    sa.Column("order_no", sa.String(64), primary_key=True),
    sa.Column("mall", sa.String(16), nullable=False),
    sa.Column("executed_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(f"mall IN {MALLS}", name="mall"),
)

sync_execution_lines = sa.Table(
    "sync_execution_lines",
    metadata,
    sa.Column(
        "order_no",
        sa.String(64),
        sa.ForeignKey("sync_executions.order_no", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
)

restocks = sa.Table(
    "restocks",
    metadata,
    sa.Column("order_no", sa.String(64), primary_key=True),
    sa.Column("mall", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime, nullable=False),
    sa.Column("repeat_requests", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("resolution_note", sa.String(1000), nullable=True),
    sa.Column("resolved_by", sa.String(100), nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("resolved_actor", sa.String(64), nullable=True),
    sa.CheckConstraint(f"mall IN {MALLS}", name="mall"),
    sa.CheckConstraint("status IN ('restored', 'failed', 'resolved')", name="status"),
    sa.CheckConstraint("code IN ('restored', 'mall_mismatch', 'product_not_found')", name="code"),
    sa.Index("ix_restocks_requested_at_order_no", "requested_at", "order_no"),
    sa.Index(
        "ix_restocks_failed",
        "requested_at",
        "order_no",
        postgresql_where=sa.text("status = 'failed'"),
        sqlite_where=sa.text("status = 'failed'"),
    ),
)

restock_lines = sa.Table(
    "restock_lines",
    metadata,
    sa.Column(
        "order_no",
        sa.String(64),
        sa.ForeignKey("restocks.order_no", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("missing", sa.Boolean, nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.LargeBinary, nullable=False),
    sa.Column("locked_until", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("receipt", sa.LargeBinary, nullable=True),
    sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
)

# The console's signed-out sessions, until their cookies would have lapsed anyway: a cookie
# carries its session, so a sign-out is kept where every worker can see it.
console_sign_outs = sa.Table(
    "console_sign_outs",
    metadata,
    sa.Column("sid", sa.String(64), primary_key=True),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_console_sign_outs_expires_at", "expires_at"),
)
