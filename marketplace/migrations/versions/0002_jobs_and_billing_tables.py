"""jobs' and billing's tables

The tables the background jobs (marketplace/indexer/tables.py: matching_claim, job_lease, replica_replacement,
provider_totals) and billing's settlement journal (billing/journal.py: billing_settlement) own. Before this
revision they were created at runtime (`ensure_tables`, `SettlementJournal.create_table`), so a database
already at 0001 may hold them: a table that exists is left as it is (the runtime created it from the same
models), one that is missing is created. Downgrade drops all five, with their rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
import sqlmodel.sql.sqltypes  # (AutoString below: mypy does not see the subpackage otherwise)
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(name: str) -> bool:
    """True unless the table is already there (offline, `--sql`: nothing to inspect, all are made)."""
    return op.get_context().as_sql or not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if _missing("matching_claim"):
        op.create_table(
            "matching_claim",
            sa.Column("task_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
            sa.Column("claimed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
            sa.PrimaryKeyConstraint("task_id"),
        )
    if _missing("job_lease"):
        op.create_table(
            "job_lease",
            sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
            sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
            sa.Column("expires_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
            sa.PrimaryKeyConstraint("name"),
        )
    if _missing("replica_replacement"):
        op.create_table(
            "replica_replacement",
            sa.Column("task_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
            sa.Column("detected_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
            sa.Column("replaced_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
            sa.Column("replaced_by", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=True),
            sa.Column("tx_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
            sa.PrimaryKeyConstraint("task_id", "provider"),
        )
    if _missing("provider_totals"):
        op.create_table(
            "provider_totals",
            sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
            sa.Column("paid", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
            sa.Column("slashed", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
            sa.Column("agreed", sa.Integer(), nullable=False),
            sa.Column("dissented", sa.Integer(), nullable=False),
            sa.Column("no_show", sa.Integer(), nullable=False),
            sa.Column("released", sa.Integer(), nullable=False),
            sa.PrimaryKeyConstraint("address"),
        )
    if _missing("billing_settlement"):
        op.create_table(
            "billing_settlement",
            sa.Column("task_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.Column(
                "state",
                sa.Enum(
                    "pending",
                    "sent",
                    "confirmed",
                    "failed",
                    name="settlementstate",
                    native_enum=False,
                    length=16,
                ),
                nullable=False,
            ),
            sa.Column("payments", sa.JSON(), nullable=False),
            sa.Column("reports", sa.JSON(), nullable=True),
            sa.Column("tx_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
            sa.Column("nonce", sa.Integer(), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
            sa.Column("error_name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
            sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
            sa.Column("retryable", sa.Boolean(), nullable=False),
            sa.Column("chain_state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
            sa.Column("chain_tx_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
            sa.Column("chain_paid", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
            sa.Column("chain_fee", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
            sa.Column("chain_refund", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
            sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
            sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("task_id"),
        )
    indexes = (
        set()
        if op.get_context().as_sql
        else {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("billing_settlement")}
    )
    if "ix_billing_settlement_state" not in indexes:
        with op.batch_alter_table("billing_settlement", schema=None) as batch_op:
            batch_op.create_index(batch_op.f("ix_billing_settlement_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("billing_settlement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_billing_settlement_state"))

    op.drop_table("billing_settlement")
    op.drop_table("provider_totals")
    op.drop_table("replica_replacement")
    op.drop_table("job_lease")
    op.drop_table("matching_claim")
