"""revoked_token: bearer tokens signed out before they expire (POST /auth/signout)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
import sqlmodel.sql.sqltypes  # (AutoString below: mypy does not see the subpackage otherwise)
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_token",
        sa.Column("token_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_id"),
    )
    with op.batch_alter_table("revoked_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_revoked_token_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("revoked_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revoked_token_expires_at"))
    op.drop_table("revoked_token")
