"""runtime classes

provider.runtime_classes: where a provider's replicas hash alike (backend, and GPU model + CUDA major for GPU
work), from the backends its daemon registers; task.runtime_class: the class the matcher placed a task's
replicas in, which later replicas (replacements, escalation, spot-check partners) must join.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
import sqlmodel.sql.sqltypes  # (AutoString below: mypy does not see the subpackage otherwise)
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider", schema=None) as batch_op:
        batch_op.add_column(sa.Column("runtime_classes", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("runtime_class", sqlmodel.sql.sqltypes.AutoString(length=160),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_column("runtime_class")
    with op.batch_alter_table("provider", schema=None) as batch_op:
        batch_op.drop_column("runtime_classes")
