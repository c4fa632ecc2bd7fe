"""The settlement journal: one row per task (the task id is the idempotency key), written BEFORE anything
is sent, so a crash, a restart or an RPC outage leaves a record of what was planned and which transaction
may be in flight. States: pending -> sent(tx hash) -> confirmed | failed(reason).

The table (`billing_settlement`) is billing's own and sits on its own metadata (`BILLING_METADATA`), not on
`SQLModel.metadata`. In the marketplace's database the marketplace's Alembic migrations create it; a journal
used on a database of its own (tests, tools) calls `SettlementJournal.create_table` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Engine
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select

from hashgrid.chain.contracts import ReplicaReport
from hashgrid.errors import HashgridError


def utcnow() -> datetime:
    return datetime.now(UTC)


TABLE = "billing_settlement"


class SettlementState(StrEnum):
    PENDING = "pending"  # planned and journaled; nothing signed yet (or a send must be redone)
    SENT = "sent"  # a finalize transaction with `tx_hash` was signed (and perhaps broadcast)
    CONFIRMED = "confirmed"  # the task is closed on chain (by our transaction or any other)
    FAILED = "failed"  # a non-retryable revert; `error_name` says which (a later settle may try again)


class BillingBase(SQLModel, registry=registry()):
    """Base of billing's tables: a registry (and metadata) of their own."""


BILLING_METADATA = BillingBase.metadata


class BillingSettlement(BillingBase, table=True):
    """One task's settlement attempt. Amounts are decimal strings (wei exceeds 2**63)."""

    __tablename__ = TABLE

    task_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    state: SettlementState = Field(
        default=SettlementState.PENDING, index=True,
        sa_type=SAEnum(SettlementState, native_enum=False, length=16,
                       values_callable=lambda e: [m.value for m in e], validate_strings=True),
    )
    # billing's plan: provider (lower-case) -> wei, as given by the caller
    payments: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # the reports finalize was (or will be) sent with: [{provider, result_hash, payment}], sorted by provider
    reports: list[dict[str, str]] | None = Field(default=None, sa_column=Column(JSON))
    tx_hash: str | None = Field(default=None, max_length=66)
    nonce: int | None = None
    attempts: int = 0  # transactions signed for this task
    error_code: str | None = None  # last error (retryable ones too, e.g. chain_unavailable)
    error_name: str | None = None  # the decoded Solidity error of a revert
    error: str | None = None
    retryable: bool = False
    chain_state: str | None = Field(default=None, max_length=16)  # settled, failed, expired, cancelled
    chain_tx_hash: str | None = Field(default=None, max_length=66)  # the transaction that closed the task
    chain_paid: str | None = None
    chain_fee: str | None = None
    chain_refund: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def report_objects(self) -> list[ReplicaReport]:
        return [ReplicaReport(r["provider"], bytes.fromhex(r["result_hash"].removeprefix("0x")),
                              int(r["payment"])) for r in self.reports or []]

    def planned_payments(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.payments.items()}


def reports_to_json(reports: Sequence[ReplicaReport]) -> list[dict[str, str]]:
    return [{"provider": r.provider.lower(), "result_hash": "0x" + bytes(r.result_hash).hex(),
             "payment": str(int(r.payment))} for r in reports]


class SettlementJournal:
    """Each method is one committed transaction, so what it records survives a crash right after it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_table(self) -> None:
        """Create `billing_settlement` if missing, for a journal on a database of its own; the marketplace's
        database gets it from its migrations (never call this there: the schema is Alembic's)."""
        BILLING_METADATA.create_all(self.engine, checkfirst=True)

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def get(self, task_id: int) -> BillingSettlement | None:
        with self._session() as session:
            return session.get(BillingSettlement, task_id)

    def rows(self, states: Iterable[SettlementState] | None = None,
             task_ids: Iterable[int] | None = None) -> list[BillingSettlement]:
        with self._session() as session:
            query = select(BillingSettlement).order_by(col(BillingSettlement.task_id))
            if states is not None:
                query = query.where(col(BillingSettlement.state).in_(list(states)))
            if task_ids is not None:
                query = query.where(col(BillingSettlement.task_id).in_(list(task_ids)))
            return list(session.exec(query))

    def begin(self, task_id: int, payments: Mapping[str, int]) -> BillingSettlement:
        """Record the plan under the task's key. An existing row keeps its plan once a transaction was signed
        with it (state sent or confirmed); a pending row with no transaction or a failed one takes the new
        plan (nothing was paid with the old one) and forgets its reports so they are rebuilt."""
        plan = {k.lower(): str(int(v)) for k, v in payments.items()}
        with self._session() as session:
            row = session.get(BillingSettlement, task_id)
            if row is None:
                row = BillingSettlement(task_id=task_id, payments=plan)
            elif row.state == SettlementState.FAILED or (
                row.state == SettlementState.PENDING and not row.tx_hash
            ):
                if row.payments != plan:
                    row.payments, row.reports = plan, None
                row.state = SettlementState.PENDING
                row.updated_at = utcnow()
            else:
                return row
            session.add(row)
            session.commit()
            return row

    def _update(self, task_ids: Iterable[int], **values: Any) -> None:
        with self._session() as session:
            for task_id in task_ids:
                row = session.get(BillingSettlement, task_id)
                if row is None:
                    continue
                for key, value in values.items():
                    setattr(row, key, value)
                row.updated_at = utcnow()
                session.add(row)
            session.commit()

    def set_reports(self, task_id: int, reports: Sequence[ReplicaReport]) -> None:
        self._update([task_id], reports=reports_to_json(reports))

    def mark_sent(self, task_ids: Sequence[int], tx_hash: str, nonce: int) -> None:
        """Called after signing and before broadcasting: the hash is known before the node sees the tx."""
        with self._session() as session:
            for task_id in task_ids:
                row = session.get(BillingSettlement, task_id)
                if row is None:
                    continue
                row.state, row.tx_hash, row.nonce = SettlementState.SENT, tx_hash, nonce
                row.attempts += 1
                row.updated_at = utcnow()
                session.add(row)
            session.commit()

    def mark_unsent(self, task_ids: Sequence[int]) -> None:
        """The signed transaction is known not to be anywhere (dropped, or never reached a node)."""
        self._update(task_ids, state=SettlementState.PENDING, tx_hash=None, nonce=None)

    def mark_confirmed(self, task_id: int, *, chain_state: str, chain_tx_hash: str | None, paid: int,
                       fee: int, refund: int) -> None:
        self._update([task_id], state=SettlementState.CONFIRMED, chain_state=chain_state,
                     chain_tx_hash=chain_tx_hash, chain_paid=str(paid), chain_fee=str(fee),
                     chain_refund=str(refund), error_code=None, error_name=None, error=None, retryable=False)

    def mark_failed(self, task_id: int, error: HashgridError) -> None:
        self._update([task_id], state=SettlementState.FAILED, error_code=error.code,
                     error_name=getattr(error, "error_name", None) or None, error=error.message,
                     retryable=False, tx_hash=None, nonce=None)

    def note_error(self, task_ids: Iterable[int], error: HashgridError) -> None:
        """A retryable problem (RPC down, receipt timeout): the state stays, the error is recorded."""
        self._update(task_ids, error_code=error.code, error=error.message, retryable=error.retryable,
                     error_name=getattr(error, "error_name", None) or None)
