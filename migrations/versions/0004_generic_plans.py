"""generic plans for the service's prepared statements (PostgreSQL)

The PostgreSQL store runs each write as one prepared statement of many CTEs. Planning such
a statement costs the server about as much as running it, and PostgreSQL's default keeps
planning it afresh at every execution (a custom plan looks cheaper to it than the generic
one, whose array parameters it cannot size). The statements look rows up by key whatever
the plan (see docs/decisions.md), so this database plans them once per connection. It is a
setting of the database, applied as each connection starts: the service itself sets
nothing on its connections, so a pooler in transaction mode can hand any of them any
statement. A role that may not alter the database gets a warning instead, and runs on
PostgreSQL's default.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _set(value: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        DO $$
        BEGIN
          EXECUTE format('ALTER DATABASE %I {value}', current_database());
        EXCEPTION WHEN insufficient_privilege THEN
          RAISE WARNING 'restock-service: cannot set plan_cache_mode on this database (%); '
                        'the service runs, at PostgreSQL''s default plan cache mode', SQLERRM;
        END
        $$
        """
    )


def upgrade() -> None:
    _set("SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    _set("RESET plan_cache_mode")
