"""a second trust bar and the quorum a check needs

provider_reputation.solo: the provider may run a trust-level task alone (a longer clean streak than the
`trusted` bar that lets it check others); task_check.quorum: the equal hashes the verifier's check needs (two
for a spot check or a partner, three for `paranoid`). docs/verification.md §2.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_reputation") as batch:
        batch.add_column(sa.Column("solo", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("task_check") as batch:
        batch.add_column(sa.Column("quorum", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_check") as batch:
        batch.drop_column("quorum")
    with op.batch_alter_table("provider_reputation") as batch:
        batch.drop_column("solo")
