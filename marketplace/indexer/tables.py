"""Tables the background jobs own (claims, leases, replacement requests, provider totals).

They sit on their own metadata (`JOBS_METADATA`), not on `SQLModel.metadata`; Alembic creates them
(migration 0002) like every other table: `marketplace.db.schema_metadata` lists this metadata.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from marketplace.models import utcnow


class JobsBase(SQLModel, registry=registry()):
    """Base of the jobs' tables: a registry (and metadata) of their own."""


JOBS_METADATA = JobsBase.metadata


class MatchingClaim(JobsBase, table=True):
    """A matching worker's claim on a task (SQLite path; PostgreSQL uses row locks): the atomic conditional
    UPDATE of `claimed_by` makes at most one worker match a task at a time; a lease bounds a crashed one."""

    __tablename__ = "matching_claim"

    task_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_at: datetime | None = None


class JobLease(JobsBase, table=True):
    """A named lease so that one indexer at a time advances the cursor (several workers may be running)."""

    __tablename__ = "job_lease"

    name: str = Field(primary_key=True, max_length=32)
    holder: str | None = Field(default=None, max_length=64)
    expires_at: datetime | None = None


class ReplicaReplacement(JobsBase, table=True):
    """A replica whose provider went offline before committing: the matcher assigns an extra replica for it
    (the on-chain no-show stays and is slashed at finalize). `replaced_at` is set once the assign landed."""

    __tablename__ = "replica_replacement"

    task_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    provider: str = Field(primary_key=True, max_length=42)
    detected_at: datetime = Field(default_factory=utcnow)
    replaced_at: datetime | None = None
    replaced_by: str | None = Field(default=None, max_length=42)
    tx_hash: str | None = Field(default=None, max_length=66)


class ProviderTotals(JobsBase, table=True):
    """A provider's lifetime figures from the chain (explorer): recomputed from ChainEvent rows, so they are
    exact after any re-run, rewind or rebuild. Amounts are wei as decimal strings."""

    __tablename__ = "provider_totals"

    address: str = Field(primary_key=True, max_length=42)
    paid: str = "0"
    slashed: str = "0"
    agreed: int = 0
    dissented: int = 0
    no_show: int = 0
    released: int = 0
