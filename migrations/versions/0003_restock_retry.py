"""restock_retry_if: lets one statement ask to be run again (PostgreSQL)

Some statements of the PostgreSQL store (restock_service/store/sql/) check that what was
read still holds; when it does not, they call restock_retry_if(true), which fails the
statement with SQLSTATE 40001 (serialization failure): nothing of it is written, and the
service runs it again (restock_service/retry.py). SQLite needs nothing here.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION restock_retry_if(stale boolean) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          IF stale THEN
            RAISE EXCEPTION 'restock: what the request read changed before it wrote'
              USING ERRCODE = 'serialization_failure';
          END IF;
          RETURN true;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION restock_retry_if(boolean)")
