"""provider GPU details: the offered GPUs' smallest memory and the CUDA major version of their driver

Filled at registration from the provider's capabilities (provider/gpu.py detects them through NVML); the
matcher reads them (min_gpu_memory_mb; replicas of a GPU task agree only on one GPU model and CUDA major).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider") as batch:
        batch.add_column(sa.Column("gpu_memory_mb", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("cuda_major", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("provider") as batch:
        batch.drop_column("cuda_major")
        batch.drop_column("gpu_memory_mb")
