"""The verifier's state in the database: the checks it put on tasks, and each provider's reputation.

`TaskCheck` is what only the marketplace knows (which task is a canary and its answer, which run was spot
checked): it is never on chain, so a provider cannot read it. `ProviderReputation` is a projection: folded
from the stored ReplicaFinalized events in chain order (outcomes of checked tasks counted as passed or
failed checks; agreements on tasks whose customer allow-listed its providers not counted), so it is exact
after any replay, rewind or rebuild, like ProviderTotals; the score is also copied to Provider.reputation,
which the matcher weighs and the explorer shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import BigInteger
from sqlmodel import Field, Session, col, select

from marketplace.indexer.tables import JobsBase
from marketplace.models import ChainEvent, Provider, SpecRecord, Task, utcnow
from verifier.checks import outcome_of
from verifier.reputation import ProviderRecord, ReputationParams, is_trusted, may_run_alone, score, update

# ITaskEscrow.ReplicaState values of ReplicaFinalized.outcome, by name
PARAMS = ReputationParams()
_STATUS = {4: "agreed", 5: "dissented", 6: "no_show", 7: "released"}


class TaskCheck(JobsBase, table=True):
    """A check the verifier placed on a task (spot check, partner, bootstrap, canary): the equal hashes it
    needs and, for a canary, its answer."""

    __tablename__ = "task_check"

    task_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(max_length=16)
    expected_hash: str | None = Field(default=None, max_length=66)  # canary: the known answer (0x hex)
    source_task: int | None = Field(default=None, sa_type=BigInteger)  # canary: the verified task it repeats
    quorum: int | None = None  # equal hashes the check needs (None: two, as before this column)
    created_at: datetime = Field(default_factory=utcnow)


class ProviderReputation(JobsBase, table=True):
    """A provider's record from verified outcomes only (see verifier.reputation)."""

    __tablename__ = "provider_reputation"

    address: str = Field(primary_key=True, max_length=42)
    score: float = 0.5
    trusted: bool = False  # may check others (partner, spot check, escalation)
    solo: bool = False  # may run a trust-level task alone (the longer streak)
    streak: int = 0
    verified: int = 0
    dissents: int = 0
    caught: int = 0
    no_shows: int = 0


def checks_of(session: Session, task_ids: Iterable[int]) -> dict[int, TaskCheck]:
    ids = list(set(task_ids))
    if not ids:
        return {}
    return {c.task_id: c for c in session.exec(select(TaskCheck).where(col(TaskCheck.task_id).in_(ids)))}


def chosen_by_customer(session: Session, task_ids: Iterable[int]) -> set[int]:
    """Tasks whose spec names the only providers that may run them (requirements.providers): a customer
    with sybil providers could otherwise farm them a reputation by allow-listing them on its own tasks."""
    ids = list(set(task_ids))
    if not ids:
        return set()
    rows = session.exec(
        select(Task.task_id, SpecRecord.spec)
        .join(SpecRecord, (col(SpecRecord.spec_hash) == col(Task.spec_hash))
              & (col(SpecRecord.customer) == col(Task.customer)))
        .where(col(Task.task_id).in_(ids))).all()
    return {int(task_id) for task_id, spec in rows
            if isinstance(spec, dict) and (spec.get("requirements") or {}).get("providers")}


def record_of(session: Session, address: str, params: ReputationParams = PARAMS
              ) -> tuple[ProviderRecord, int]:
    """Fold the provider's finalized replicas in chain order into its record; also the no-shows counted."""
    events = session.exec(
        select(ChainEvent.task_id, ChainEvent.args)
        .where(col(ChainEvent.name) == "ReplicaFinalized", col(ChainEvent.account) == address)
        .order_by(col(ChainEvent.block_number), col(ChainEvent.log_index))).all()
    kinds = {task_id: c.kind for task_id, c in checks_of(session, (t for t, _ in events if t)).items()}
    chosen = chosen_by_customer(session, (t for t, _ in events if t))
    record, no_shows = ProviderRecord(), 0
    for task_id, args in events:
        status = _STATUS.get(int(args.get("outcome", 0)), "")
        if status == "agreed" and task_id in chosen:
            continue  # a customer's own choice of providers vouches for nobody: it could be its sybils
        outcome = outcome_of(status, kinds.get(task_id or 0))
        if outcome is None:
            continue
        no_shows += outcome == "no_show"
        record = update(record, outcome, params)
    return record, no_shows


def refresh_reputation(session: Session, providers: Iterable[str],
                       params: ReputationParams = PARAMS) -> None:
    """Recompute the reputation of `providers` and copy the score to their Provider rows."""
    for address in providers:
        record, no_shows = record_of(session, address, params)
        row = session.get(ProviderReputation, address)
        if row is None:
            if record == ProviderRecord() and not no_shows:
                continue  # not a provider with a verified outcome (a customer, a fresh provider)
            row = ProviderReputation(address=address)
        row.score, row.trusted = score(record, params), is_trusted(record, params)
        row.solo = may_run_alone(record, params)
        row.streak, row.verified, row.dissents = record.streak, record.verified, record.dissents
        row.caught, row.no_shows = record.caught, no_shows
        session.add(row)
        provider = session.get(Provider, address)
        if provider is not None and provider.reputation != row.score:
            provider.reputation = row.score
            session.add(provider)


def trusted_providers(session: Session) -> set[str]:
    return set(session.exec(select(ProviderReputation.address).where(col(ProviderReputation.trusted))))
