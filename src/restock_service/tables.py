"""The schema as SQLAlchemy Core tables, shared by PostgreSQL and SQLite.

Alembic migrations are the schema of record; a test proves these tables agree with them.

Every table of a merchant's data carries ``merchant_id`` (contract v1.3), and its primary
key and every unique constraint and index begin with it: a merchant's rows are found, and
kept unique, within that merchant, as Citus asks of a table distributed by it
(docs/scaling.md). The column has no default, so a write that does not name its merchant
fails rather than lands at one.
"""

import re
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


MERCHANT_ID_LENGTH = 32
# A merchant_id (contract v1.3), checked wherever one is named (the Merchant-Id header, the
# keys' merchants, paths, the CLI), so "*" is no merchant's. Its one home, with its wording.
MERCHANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
MERCHANT_ID_RULE = "1 to 32 lowercase letters, digits and '-', beginning with a letter or digit"
_MERCHANT_ID = re.compile(MERCHANT_ID_PATTERN)


def is_merchant_id(value: object) -> bool:
    return isinstance(value, str) and _MERCHANT_ID.fullmatch(value) is not None


DEFAULT_MERCHANT = "default"  # in every deployment; v1.2's data is its
PLATFORM = "*"  # the merchant_id of a platform key: no merchant's id can be "*"


def _merchant_id() -> sa.Column[str]:
    return sa.Column("merchant_id", sa.String(MERCHANT_ID_LENGTH), nullable=False)


merchants = sa.Table(
    "merchants",
    metadata,
    sa.Column("merchant_id", sa.String(MERCHANT_ID_LENGTH), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# Merchant keys (merchant_id their merchant) and platform keys (merchant_id PLATFORM), as
# SHA-256 digests. A revoked key keeps its row, and so its name: an actor on a ledger row
# always names one key. A small table, looked up by digest before the merchant is known:
# Citus would keep it on every node, as it keeps merchants (docs/scaling.md).
api_keys = sa.Table(
    "api_keys",
    metadata,
    _merchant_id(),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("digest", sa.LargeBinary(32), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
    sa.PrimaryKeyConstraint("merchant_id", "name"),
    sa.CheckConstraint("role IN ('writer', 'reader', 'admin')", name="role"),
    sa.CheckConstraint(f"role <> 'admin' OR merchant_id = '{PLATFORM}'", name="admin_platform"),
    sa.Index("ix_api_keys_digest", "digest"),
)

stock = sa.Table(
    "stock",
    metadata,
    _merchant_id(),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.PrimaryKeyConstraint("merchant_id", "sku"),
)

stock_movements = sa.Table(
    "stock_movements",
    metadata,
    _merchant_id(),
    # PostgreSQL numbers the rows from one sequence (the column's default, since migration
    # 0001); SQLite, which numbers by itself only a lone INTEGER PRIMARY KEY, numbers each
    # merchant's rows in the write that adds them (store/sqlite.py).
    sa.Column("id", sa.BigInteger, nullable=False, server_default=sa.FetchedValue()),
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
    sa.PrimaryKeyConstraint("merchant_id", "id"),
    sa.CheckConstraint(
        "reason IN ('set', 'sync_execution', 'restock', 'adjustment', 'delete')", name="reason"
    ),
    sa.Index("ix_stock_movements_sku_id", "merchant_id", "sku", "id"),
    sa.Index("ix_stock_movements_txid_id", "merchant_id", "txid", "id"),
)

sync_executions = sa.Table(
    "sync_executions",
    metadata,
    _merchant_id(),
    sa.Column("order_no", sa.String(64), nullable=False),
    sa.Column("mall", sa.String(16), nullable=False),
    sa.Column("executed_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.PrimaryKeyConstraint("merchant_id", "order_no"),
    sa.CheckConstraint(f"mall IN {MALLS}", name="mall"),
)

sync_execution_lines = sa.Table(
    "sync_execution_lines",
    metadata,
    _merchant_id(),
    sa.Column("order_no", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.PrimaryKeyConstraint("merchant_id", "order_no", "sku"),
    sa.ForeignKeyConstraint(
        ["merchant_id", "order_no"],
        ["sync_executions.merchant_id", "sync_executions.order_no"],
        ondelete="CASCADE",
    ),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
)

restocks = sa.Table(
    "restocks",
    metadata,
    _merchant_id(),
    sa.Column("order_no", sa.String(64), nullable=False),
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
    sa.PrimaryKeyConstraint("merchant_id", "order_no"),
    sa.CheckConstraint(f"mall IN {MALLS}", name="mall"),
    sa.CheckConstraint("status IN ('restored', 'failed', 'resolved')", name="status"),
    sa.CheckConstraint("code IN ('restored', 'mall_mismatch', 'product_not_found')", name="code"),
    sa.Index("ix_restocks_requested_at_order_no", "merchant_id", "requested_at", "order_no"),
    sa.Index(
        "ix_restocks_failed",
        "merchant_id",
        "requested_at",
        "order_no",
        postgresql_where=sa.text("status = 'failed'"),
        sqlite_where=sa.text("status = 'failed'"),
    ),
)

restock_lines = sa.Table(
    "restock_lines",
    metadata,
    _merchant_id(),
    sa.Column("order_no", sa.String(64), nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("missing", sa.Boolean, nullable=False),
    sa.PrimaryKeyConstraint("merchant_id", "order_no", "sku"),
    sa.ForeignKeyConstraint(
        ["merchant_id", "order_no"],
        ["restocks.merchant_id", "restocks.order_no"],
        ondelete="CASCADE",
    ),
)

# A caller's keys, within the merchant its request was for: (merchant_id, owner, key).
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    _merchant_id(),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("fingerprint", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("receipt", sa.LargeBinary, nullable=True),
    sa.PrimaryKeyConstraint("merchant_id", "owner", "key"),
    # The purge's, across merchants (every shard purges its own, on Citus).
    sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
)

# The console's signed-out sessions, until their cookies would have lapsed anyway: a cookie
# carries its session, so a sign-out is kept where every worker can see it. Sessions are
# the deployment's, not a merchant's data (a platform session spans merchants).
console_sign_outs = sa.Table(
    "console_sign_outs",
    metadata,
    sa.Column("sid", sa.String(64), primary_key=True),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_console_sign_outs_expires_at", "expires_at"),
)
