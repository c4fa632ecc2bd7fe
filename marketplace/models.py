"""The marketplace's tables and API shapes (SQLModel), one model family per resource.

The chain is the source of truth: `Task`, `Replica` and the explorer's tables are filled by the chain indexer
from events and can be rebuilt from them; the marketplace alone owns what never goes on chain: specs and blobs
by hash, provider offers and heartbeats, logs, signed usage reports, auth nonces. Token amounts are wei of
GRID and can exceed 2**63, so they are stored as decimal strings and converted at the edges.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint
from sqlalchemy import Enum as SAEnum
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC now (SQLModel's UTCDateTime refuses naive datetimes)."""
    return datetime.now(UTC)


def _str_enum(enum: type[StrEnum]) -> SAEnum:
    """Enum columns stored as their lower-case values in a VARCHAR (no native PostgreSQL enum to ALTER)."""
    return SAEnum(enum, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e],
                  validate_strings=True)


class TaskStatus(StrEnum):
    """A task's state as the marketplace sees it: the on-chain state plus where its replicas are."""

    POSTED = "posted"  # on chain, waiting for placement (see Task.unplaced_reason)
    ASSIGNED = "assigned"  # replicas assigned on chain
    RUNNING = "running"  # at least one replica reported progress
    REVEALING = "revealing"  # commits in, reveals arriving
    SETTLED = "settled"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class ReplicaStatus(StrEnum):
    ASSIGNED = "assigned"
    REFUSED = "refused"  # the provider's policy refused it before running (reason in Replica.detail)
    RUNNING = "running"
    EXECUTED = "executed"  # result hash known to the provider, usage reported
    COMMITTED = "committed"
    REVEALED = "revealed"
    AGREED = "agreed"
    DISSENTED = "dissented"
    NO_SHOW = "no_show"
    RELEASED = "released"


# ------------------------------------------------------------------ specs and blobs
class Blob(SQLModel, table=True):
    """A content-addressed blob; bytes live in the content store, this row records who uploaded it."""

    sha256: str = Field(primary_key=True, max_length=64)
    size: int
    uploader: str = Field(index=True, max_length=42)
    created_at: datetime = Field(default_factory=utcnow)


class BlobClaim(SQLModel, table=True):
    """A wallet's own claim to a blob: it uploaded the bytes (streamed and hash-checked, so knowing a hash is
    not enough). Until a task links a blob, its claimants are the only wallets that may read it (docs/api.md,
    "Who may see what")."""

    sha256: str = Field(primary_key=True, max_length=64)
    holder: str = Field(primary_key=True, index=True, max_length=42)
    created_at: datetime = Field(default_factory=utcnow)


class SpecRecord(SQLModel, table=True):
    """A validated task spec registered by a customer before posting it on chain.

    Keyed by (spec_hash, customer): two customers may post the same spec, and re-registering is idempotent.
    """

    spec_hash: str = Field(primary_key=True, max_length=64)  # hex, no 0x
    customer: str = Field(primary_key=True, index=True, max_length=42)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


# ------------------------------------------------------------------ providers
class ProviderBase(SQLModel):
    operator: str = Field(max_length=42)
    capabilities: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    capabilities_hash: str = Field(default="", max_length=64)
    prices: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    policy: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    runtimes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    arch: str = Field(default="x86_64", max_length=32)
    total_cpus: float = 0
    total_memory_mb: int = 0
    total_disk_mb: int = 0
    gpus: int = 0
    gpu_model: str | None = None
    gpu_memory_mb: int = 0  # the smallest memory among the offered GPUs
    cuda_major: int | None = None  # CUDA major version of the GPUs' driver (NVML)
    # where replicas it runs hash alike (hashgrid/runtime_class.py), from the backends its daemon registered
    runtime_classes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Provider(ProviderBase, table=True):
    address: str = Field(primary_key=True, max_length=42)
    free_cpus: float = 0
    free_memory_mb: int = 0
    free_disk_mb: int = 0
    free_gpus: int = 0
    running: int = 0
    stake: str = "0"  # from the chain (indexer) or refreshed on register
    reputation: float = 0.5
    last_heartbeat: datetime | None = Field(default=None, index=True)
    registered_at: datetime = Field(default_factory=utcnow)


# ------------------------------------------------------------------ tasks (from the chain)
class Task(SQLModel, table=True):
    task_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    spec_hash: str = Field(index=True, max_length=64)
    customer: str = Field(index=True, max_length=42)
    status: TaskStatus = Field(default=TaskStatus.POSTED, index=True, sa_type=_str_enum(TaskStatus))
    replicas: int
    quorum: int
    max_replicas: int
    max_price_per_replica: str
    escrowed: str
    deadline: int = Field(sa_type=BigInteger)  # unix seconds
    priority: int = 0
    unplaced_reason: str | None = None
    # the runtime class its replicas run in, chosen by the matcher at the first assignment; later ones join it
    runtime_class: str | None = Field(default=None, max_length=160)
    result_hash: str | None = None
    posted_block: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Replica(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("task_id", "provider"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(index=True, foreign_key="task.task_id", sa_type=BigInteger)
    provider: str = Field(index=True, max_length=42)
    round: int = 1
    status: ReplicaStatus = Field(default=ReplicaStatus.ASSIGNED, index=True,
                                  sa_type=_str_enum(ReplicaStatus))
    detail: str | None = None
    commitment: str | None = None
    result_hash: str | None = None
    usage: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    usage_signature: str | None = None
    # the output manifest the provider uploaded: [{"path", "sha256", "size"}], blobs in the content store
    outputs: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    paid: str = "0"
    slashed: str = "0"
    assigned_at: datetime = Field(default_factory=utcnow)
    acked_at: datetime | None = None  # the provider confirmed it journaled the assignment (long-poll feed)
    updated_at: datetime = Field(default_factory=utcnow)


class TaskBlob(SQLModel, table=True):
    """An output blob a provider reported for a task (it must hold a claim to it): readable by that provider,
    and by the task's customer once the task's commit phase has closed on chain."""

    task_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    provider: str = Field(primary_key=True, max_length=42)
    sha256: str = Field(primary_key=True, index=True, max_length=64)


class LogChunk(SQLModel, table=True):
    """Log lines a provider streamed for its replica; shown to the task's customer and to that provider."""

    __table_args__ = (Index("ix_logchunk_task_seq", "task_id", "provider", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(sa_type=BigInteger)
    provider: str = Field(max_length=42)
    seq: int
    data: str
    created_at: datetime = Field(default_factory=utcnow)


# ------------------------------------------------------------------ auth
class UsedNonce(SQLModel, table=True):
    """Nonces already spent by signed requests or SIWE logins: a replay is refused by this primary key."""

    address: str = Field(primary_key=True, max_length=42)
    nonce: str = Field(primary_key=True, max_length=96)
    expires_at: datetime = Field(index=True)


class RevokedToken(SQLModel, table=True):
    """Bearer tokens signed out before their expiry (POST /auth/signout); purged once they expire."""

    __tablename__ = "revoked_token"
    token_id: str = Field(primary_key=True, max_length=32)
    address: str = Field(max_length=42)
    expires_at: datetime = Field(index=True)


# ------------------------------------------------------------------ chain indexing
class ChainEvent(SQLModel, table=True):
    """Every escrow/registry event seen, once: (tx_hash, log_index) makes indexing idempotent."""

    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)

    id: int | None = Field(default=None, primary_key=True)
    block_number: int = Field(index=True, sa_type=BigInteger)
    block_hash: str = Field(max_length=66)
    tx_hash: str = Field(max_length=66)
    log_index: int
    contract: str = Field(max_length=32)
    name: str = Field(index=True, max_length=64)
    task_id: int | None = Field(default=None, index=True, sa_type=BigInteger)
    account: str | None = Field(default=None, index=True, max_length=42)
    args: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class IndexerCursor(SQLModel, table=True):
    """The last block the indexer applied (confirmed), so it resumes where it stopped."""

    name: str = Field(primary_key=True, max_length=32)
    block_number: int = Field(sa_type=BigInteger)
    block_hash: str = Field(default="", max_length=66)
    updated_at: datetime = Field(default_factory=utcnow)


# ------------------------------------------------------------------ API shapes (what the HTTP API returns)
class BlobPublic(SQLModel):
    sha256: str
    size: int
    created: bool = Field(description="false when this wallet had already uploaded the blob (nothing was "
                                      "read); whether another wallet stored it is never said")


class TaskRegistration(SQLModel):
    """What POST /tasks returns: the spec hash to post on chain and the escrow `postTask` will lock."""

    spec_hash: str = Field(description="0x-prefixed sha256 of the spec's canonical JSON (on-chain specHash)")
    customer: str
    replicas: int
    quorum: int
    max_replicas: int
    max_price_per_replica: str = Field(description="wei, decimal string")
    fee_bps: int = Field(description="protocol fee in basis points, read from the escrow contract")
    escrow: str = Field(description="wei to approve and lock: escrowFor(maxReplicas, maxPricePerReplica)")
    deadline_s: int
    created: bool = Field(description="false when this customer had already registered this spec")


class ReplicaPublic(SQLModel):
    """A replica as a reader may see it (marketplace/api/services/visibility.py): the reported hash, usage and
    outputs only for the task's customer once the commit phase has closed; the public sees revealed hashes."""

    provider: str
    round: int
    status: ReplicaStatus
    detail: str | None = None
    result_hash: str | None = None
    usage: dict[str, Any] | None = Field(default=None, description="the provider's signed usage report")
    outputs: list[dict[str, Any]] | None = Field(default=None, description="output manifest [{path, sha256, "
                                                                            "size}]")
    assigned_at: datetime
    updated_at: datetime


class TaskPublic(SQLModel):
    task_id: int
    spec_hash: str
    customer: str
    status: TaskStatus
    replicas: int
    quorum: int
    max_replicas: int
    max_price_per_replica: str
    escrowed: str
    deadline: int
    priority: int
    unplaced_reason: str | None = None
    result_hash: str | None = None
    created_at: datetime
    updated_at: datetime


class TaskDetail(TaskPublic):
    replica_list: list[ReplicaPublic] = Field(default_factory=list)


class TasksPublic(SQLModel):
    data: list[TaskPublic]
    count: int


class LogChunkPublic(SQLModel):
    provider: str
    seq: int
    data: str
    created_at: datetime


class LogsPublic(SQLModel):
    data: list[LogChunkPublic]
    count: int


class TaskResult(SQLModel):
    """The verified result: the accepted hash and the output manifests of the replicas that agreed with it."""

    task_id: int
    result_hash: str
    agreeing: list[str]
    outputs: list[dict[str, Any]]


class ProviderPublic(ProviderBase):
    address: str
    free_cpus: float
    free_memory_mb: int
    free_disk_mb: int
    free_gpus: int
    running: int
    stake: str
    reputation: float
    last_heartbeat: datetime | None
    registered_at: datetime
    online: bool = False  # a fresh heartbeat and a stake at or above the minimum: it can be given work
    eligible: bool = False  # staked at or above the registry minimum


class ProvidersPublic(SQLModel):
    data: list[ProviderPublic]
    count: int


class AssignmentPublic(SQLModel):
    task_id: int
    spec_hash: str
    round: int
    assigned_at: datetime
    runtime_class: str | None = None  # the daemon runs the replica in exactly this class, or refuses it


class AssignmentsPublic(SQLModel):
    data: list[AssignmentPublic]
    count: int


class ChainEventPublic(SQLModel):
    block_number: int
    tx_hash: str
    log_index: int
    contract: str
    name: str
    task_id: int | None
    account: str | None
    args: dict[str, Any]


class ChainEventsPublic(SQLModel):
    data: list[ChainEventPublic]
    count: int
