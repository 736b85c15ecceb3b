"""merchants: every row of a merchant's data names its merchant (contract v1.3)

New tables: ``merchants``, holding ``default``, and ``api_keys``. The seven tables of a
merchant's data gain ``merchant_id``, every existing row at ``default``, and the column
keeps no default: a write that names no merchant fails. Their primary keys begin with it,
the lines' foreign keys name (merchant_id, order_no), and so do their indexes but the
purge's. ``idempotency_keys.locked_until`` goes: since 0007 it is always null. On SQLite
``stock_movements.id`` stops numbering itself (the store numbers a merchant's rows); on
PostgreSQL its sequence stays the column's default.

PostgreSQL upgrades while the service writes, in steps that each take up where a failed run
stopped:

1. the new tables; the column, with the default, on each table (metadata only since
   PostgreSQL 11: existing rows read the value from ``pg_attribute.attmissingval``, which
   dropping the default later leaves alone);
2. the new keys' unique indexes and the new indexes, built by CREATE INDEX CONCURRENTLY
   outside any transaction (an INVALID one, left by a failed build, is built again) under
   ``*_0009`` names;
3. for each table with its lines, one transaction: the old foreign keys and primary keys
   out, the new ones in USING their indexes, the foreign keys NOT VALID, the old indexes
   dropped and the new ones renamed, the default dropped; then ``locked_until`` dropped;
4. VALIDATE CONSTRAINT on the foreign keys, which blocks no write.

Steps 1 and 3 hold their tables' locks for milliseconds, but each lock wait gives up after
LOCK_TIMEOUT: behind a long transaction the migration fails instead of queueing every write
behind itself, and is run again. A v1.2 service writes on until step 3 (its rows land at
``default``); from then on only v1.3 can. Entering an autocommit block commits what ran
before it, so this revision commits as it goes, and ``alembic_version`` names it only when
it is done.

SQLite rebuilds each table once, all in the migration's one transaction, with foreign keys
off (migrations/env.py).

Going down refuses, before it changes anything, while any merchant but ``default`` exists
or has a row. It is one transaction, on a stopped service: it locks the tables, and builds
the v1.2 keys as plain indexes. The database keys (``api_keys``) go with their table.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations
from alembic.util import CommandError

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT = "default"
LOCK_TIMEOUT = "5s"
NEW = "_0009"  # the suffix of an index built by this revision, until it takes its name

# The tables of a merchant's data, each parent before its lines, with their primary keys
# at 0008; from 0009 merchant_id comes first in each.
KEYS = {
    "stock": ["sku"],
    "stock_movements": ["id"],
    "sync_executions": ["order_no"],
    "sync_execution_lines": ["order_no", "sku"],
    "restocks": ["order_no"],
    "restock_lines": ["order_no", "sku"],
    "idempotency_keys": ["owner", "key"],
}
# Lines, and the table of their orders (ON DELETE CASCADE).
PARENTS = {"sync_execution_lines": "sync_executions", "restock_lines": "restocks"}
# The indexes merchant_id comes first in: their tables, columns at 0008, and predicates.
INDEXES = {
    "ix_stock_movements_sku_id": ("stock_movements", ["sku", "id"], None),
    "ix_stock_movements_txid_id": ("stock_movements", ["txid", "id"], None),
    "ix_restocks_requested_at_order_no": ("restocks", ["requested_at", "order_no"], None),
    "ix_restocks_failed": ("restocks", ["requested_at", "order_no"], "status = 'failed'"),
}


def _merchant_id(server_default: str | None = None) -> sa.Column[str]:
    return sa.Column("merchant_id", sa.String(32), nullable=False, server_default=server_default)


def _foreign_key(child: str, column: str) -> str:
    """The name the tables' naming convention gives a foreign key whose first column is
    ``column``."""
    return f"fk_{child}_{column}_{PARENTS[child]}"


def _indexes(table: str) -> Iterator[tuple[str, list[str], sa.TextClause | None]]:
    for name, (on, columns, where) in INDEXES.items():
        if on == table:
            yield name, columns, None if where is None else sa.text(where)


def _create_merchants() -> None:
    merchants = op.create_table(
        "merchants",
        sa.Column("merchant_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_merchants")),
    )
    op.bulk_insert(
        merchants, [{"merchant_id": DEFAULT, "name": DEFAULT, "created_at": datetime.now(UTC)}]
    )
    op.create_table(
        "api_keys",
        _merchant_id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('writer', 'reader', 'admin')", name=op.f("ck_api_keys_role")),
        sa.CheckConstraint(
            "role <> 'admin' OR merchant_id = '*'", name=op.f("ck_api_keys_admin_platform")
        ),
        sa.PrimaryKeyConstraint("merchant_id", "name", name=op.f("pk_api_keys")),
    )
    op.create_index("ix_api_keys_digest", "api_keys", ["digest"])


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def _upgrade_sqlite() -> None:
    _create_merchants()
    for table, key in KEYS.items():
        # In place (ALTER TABLE ADD COLUMN), so that the rebuild copies every row's value.
        with op.batch_alter_table(table) as batch:
            batch.add_column(_merchant_id(server_default=DEFAULT))
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.alter_column("merchant_id", server_default=None)
            batch.drop_constraint(op.f(f"pk_{table}"), type_="primary")
            batch.create_primary_key(op.f(f"pk_{table}"), ["merchant_id", *key])
            if table == "stock_movements":
                batch.alter_column(
                    "id", type_=sa.BigInteger(), existing_type=sa.Integer(), autoincrement=False
                )
            if table in PARENTS:
                batch.drop_constraint(op.f(_foreign_key(table, "order_no")), type_="foreignkey")
                _create_foreign_key(batch, table, ["merchant_id", "order_no"])
            for name, columns, where in _indexes(table):
                batch.drop_index(name)
                batch.create_index(name, ["merchant_id", *columns], sqlite_where=where)
            if table == "idempotency_keys":
                batch.drop_column("locked_until")


def _create_foreign_key(batch: BatchOperations, child: str, columns: list[str]) -> None:
    batch.create_foreign_key(
        op.f(_foreign_key(child, columns[0])),
        PARENTS[child],
        columns,
        columns,
        ondelete="CASCADE",
    )


def _upgrade_postgresql() -> None:
    if not sa.inspect(op.get_bind()).has_table("merchants"):
        with _short_transaction():
            _create_merchants()
    for table in KEYS:
        with _short_transaction():
            op.add_column(table, _merchant_id(server_default=DEFAULT), if_not_exists=True)
    families = [family for family in _families() if not _has_merchant_key(family[0])]
    with op.get_context().autocommit_block():
        for table in (table for family in families for table in family):
            _build_concurrently(f"pk_{table}{NEW}", table, ["merchant_id", *KEYS[table]], True)
            for name, columns, where in _indexes(table):
                _build_concurrently(f"{name}{NEW}", table, ["merchant_id", *columns], where=where)
    for family in families:
        with _short_transaction():
            _swap_keys(family)
    with _short_transaction():
        op.drop_column("idempotency_keys", "locked_until", if_exists=True)
    with op.get_context().autocommit_block():
        for child in PARENTS:
            op.execute(
                f"ALTER TABLE {child} VALIDATE CONSTRAINT {_foreign_key(child, 'merchant_id')}"
            )


@contextmanager
def _short_transaction() -> Iterator[None]:
    """Run the block in a transaction of its own, where each lock wait gives up after
    LOCK_TIMEOUT. Entering an autocommit block commits it (and leaving, begins the next)."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    yield
    with op.get_context().autocommit_block():
        pass


def _families() -> list[list[str]]:
    """Each table with its lines, whose keys one transaction swaps."""
    return [[t, *(c for c, p in PARENTS.items() if p == t)] for t in KEYS if t not in PARENTS]


def _has_merchant_key(table: str) -> bool:
    key = sa.inspect(op.get_bind()).get_pk_constraint(table)["constrained_columns"]
    return key[0] == "merchant_id"


def _build_concurrently(
    name: str,
    table: str,
    columns: list[str],
    unique: bool = False,
    where: sa.TextClause | None = None,
) -> None:
    """CREATE INDEX CONCURRENTLY, unless a valid index of that name is there; one that a
    failed build left INVALID is dropped first."""
    valid = op.get_bind().scalar(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": name},
    )
    if valid:
        return
    op.drop_index(name, table_name=table, if_exists=True, postgresql_concurrently=True)
    op.create_index(
        name, table, columns, unique=unique, postgresql_concurrently=True, postgresql_where=where
    )


def _swap_keys(family: list[str]) -> None:
    """The indexes built for this revision become the keys: a primary key USING its index
    and a foreign key NOT VALID scan nothing."""
    # Parent first, as the writes take them.
    op.execute(f"LOCK TABLE {', '.join(family)} IN ACCESS EXCLUSIVE MODE")
    for child in family[1:]:
        op.drop_constraint(_foreign_key(child, "order_no"), child, type_="foreignkey")
    for table in family:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT pk_{table},"
            f" ADD CONSTRAINT pk_{table} PRIMARY KEY USING INDEX pk_{table}{NEW},"
            " ALTER COLUMN merchant_id DROP DEFAULT"
        )
        for name, _, _ in _indexes(table):
            op.drop_index(name, table_name=table)
            op.execute(f"ALTER INDEX {name}{NEW} RENAME TO {name}")
    for child in family[1:]:
        op.create_foreign_key(
            _foreign_key(child, "merchant_id"),
            child,
            PARENTS[child],
            ["merchant_id", "order_no"],
            ["merchant_id", "order_no"],
            ondelete="CASCADE",
            postgresql_not_valid=True,
        )


def downgrade() -> None:
    _refuse_other_merchants()
    for child in PARENTS:
        with op.batch_alter_table(child) as batch:
            batch.drop_constraint(op.f(_foreign_key(child, "merchant_id")), type_="foreignkey")
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, key in KEYS.items():
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"pk_{table}"), type_="primary")
            batch.create_primary_key(op.f(f"pk_{table}"), key)
            for name, _, _ in _indexes(table):
                batch.drop_index(name)
            batch.drop_column("merchant_id")
            for name, columns, where in _indexes(table):
                batch.create_index(name, columns, postgresql_where=where, sqlite_where=where)
            if table == "stock_movements" and sqlite:  # the rowid again, which numbers itself
                batch.alter_column("id", type_=sa.Integer(), existing_type=sa.BigInteger())
            if table == "idempotency_keys":
                batch.add_column(sa.Column("locked_until", sa.DateTime(timezone=True)))
    for child in PARENTS:
        with op.batch_alter_table(child) as batch:
            _create_foreign_key(batch, child, ["order_no"])
    op.drop_index("ix_api_keys_digest", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("merchants")


def _refuse_other_merchants() -> None:
    """Raise while any merchant but default exists or has a row: 0008 has no place for it."""
    bind = op.get_bind()
    tables = ["merchants", *KEYS]
    if bind.dialect.name == "postgresql":
        op.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
    for table in tables:
        # Two ranges of the primary key's index, where "<>" would read every row.
        other = bind.scalar(
            sa.text(
                f"SELECT merchant_id FROM {table}"
                " WHERE merchant_id < :default OR merchant_id > :default LIMIT 1"
            ),
            {"default": DEFAULT},
        )
        if other is not None:
            raise CommandError(
                f"cannot downgrade to 0008: table {table} holds a row of merchant {other!r},"
                f" and 0008 has room for merchant {DEFAULT!r} alone"
            )
