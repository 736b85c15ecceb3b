"""key receipts: a keyed write keeps what its statements returned, not its rendered answer

A key's row now holds, beside the request's fingerprint, the ``receipt`` of its write (and
no claim token: a key is never held apart from its write's effect): on
PostgreSQL the rows of the statements the write ran (JSON), kept by the write's own statement;
on SQLite the write's result. A replay answers the write from the receipt and renders the
answer again (restock_service/idempotency.py). The rendered answers of revision 0005 go: the
keys stored under it are dropped with them, which is safe only with no keyed write to replay
(a fresh install, or keys older than their retention window).

On PostgreSQL, ``idempotency_key_held_if(true)`` fails a keyed statement with SQLSTATE RK409
when another request with the key is still in its write (the key's advisory lock is taken):
the statement's effect is undone with it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("status")
        batch.drop_column("content_type")
        batch.drop_column("body")
        batch.drop_column("token")
        batch.add_column(sa.Column("receipt", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION idempotency_key_held_if(held boolean) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          IF held THEN
            RAISE EXCEPTION 'restock: the idempotency key is held by another request'
              USING ERRCODE = 'RK409';
          END IF;
          RETURN true;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION idempotency_key_held_if(boolean)")
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("receipt")
        batch.add_column(sa.Column("token", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("status", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("content_type", sa.String(100), nullable=True))
        batch.add_column(sa.Column("body", sa.LargeBinary(), nullable=True))
