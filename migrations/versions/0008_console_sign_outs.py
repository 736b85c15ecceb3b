"""console sign-outs: a signed-out session is refused by every worker

The console's session lives in its signed cookie, so a worker can tell that a cookie was
signed out only from a row here: the session's random id, kept until ``expires_at``, when
the cookie's own signed timestamp would have lapsed anyway. The service removes lapsed rows
in bounded batches through ``ix_console_sign_outs_expires_at``, as it does forgotten
idempotency keys. Going down forgets the sign-outs: their cookies are then accepted again
until they lapse, as they were before this revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_sign_outs",
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_console_sign_outs")),
    )
    op.create_index("ix_console_sign_outs_expires_at", "console_sign_outs", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_console_sign_outs_expires_at", table_name="console_sign_outs")
    op.drop_table("console_sign_outs")
