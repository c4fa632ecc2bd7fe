"""blob claims

blobclaim: the wallets that uploaded a blob's bytes themselves. Until a task links a blob, they alone may
read it (before, any signed wallet could). Filled from blob.uploader for blobs stored before this revision.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
import sqlmodel.sql.sqltypes  # (AutoString below: mypy does not see the subpackage otherwise)
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blobclaim",
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "holder"),
    )
    op.create_index(op.f("ix_blobclaim_holder"), "blobclaim", ["holder"], unique=False)
    op.execute(
        "INSERT INTO blobclaim (sha256, holder, created_at) SELECT sha256, uploader, created_at FROM blob"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_blobclaim_holder"), table_name="blobclaim")
    op.drop_table("blobclaim")
