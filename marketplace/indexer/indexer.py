"""The chain indexer: escrow and registry logs from the cursor up to head − confirmations, in bounded block
ranges, stored once and applied to the tables; reorg-safe and able to rebuild the database from the chain.

Each range commits in one transaction together with the cursor, so a crash repeats at most one range, and
repeating one changes nothing (events are stored once, application is idempotent). If the block the cursor
names changed hash (a reorg deeper than the confirmations), the indexer rewinds `reorg_depth` blocks: it
deletes the events above the new cursor, re-projects the tasks they touched from the events that remain, and
indexes forward again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from hashgrid.chain.client import ChainClient
from hashgrid.chain.deployment import Deployment
from marketplace.indexer import apply
from marketplace.indexer.events import REGISTRY, DecodedEvent, EventDecoder
from marketplace.indexer.tables import ProviderTotals
from marketplace.indexer.verification import ProviderReputation
from marketplace.models import ChainEvent, IndexerCursor, Provider, utcnow

log = logging.getLogger(__name__)

CURSOR = "chain"
RECENT_STATE = 128  # blocks back a non-archive node still serves state for


@dataclass
class IndexReport:
    """What one run did (returned by the job, so logs and Celery results show it)."""

    from_block: int
    to_block: int
    events: int = 0
    batches: int = 0
    rewound_to: int | None = None
    providers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"from_block": self.from_block, "to_block": self.to_block, "events": self.events,
                "batches": self.batches, "rewound_to": self.rewound_to}


class Indexer:
    """Reads the deployment's escrow and registry events into the database."""

    def __init__(
        self,
        *,
        client: ChainClient,
        deployment: Deployment,
        confirmations: int = 0,
        batch_blocks: int = 2_000,
        reorg_depth: int = 64,
        name: str = CURSOR,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.confirmations = confirmations
        self.batch_blocks = batch_blocks
        self.reorg_depth = reorg_depth
        self.name = name
        self.decoder = EventDecoder(deployment)
        registry = deployment.abis[REGISTRY]
        self._registry = client.w3.eth.contract(address=to_checksum_address(deployment.address(REGISTRY)),
                                                abi=registry)

    # ------------------------------------------------------------------ cursor
    def cursor(self, session: Session) -> IndexerCursor:
        row = session.get(IndexerCursor, self.name)
        if row is None:
            row = IndexerCursor(name=self.name, block_number=self.deployment.start_block - 1, block_hash="")
        return row

    def _block_hash(self, number: int) -> str:
        return self.client.header(number).hash

    # ------------------------------------------------------------------ reading
    def fetch(self, from_block: int, to_block: int) -> list[DecodedEvent]:
        """Decoded events of the indexed contracts in [from_block, to_block], in chain order."""
        params: dict[str, Any] = {
            "address": [to_checksum_address(a) for a in self.decoder.address_list],
            "fromBlock": from_block,
            "toBlock": to_block,
        }
        logs = self.client._guarded(lambda: self.client.w3.eth.get_logs(params))  # type: ignore[arg-type]
        decoded = [e for e in (self.decoder.decode(raw) for raw in logs) if e is not None]
        return sorted(decoded, key=lambda e: (e.block_number, e.log_index))

    # ------------------------------------------------------------------ running
    def run(
        self, session: Session, *, max_batches: int | None = None, to_block: int | None = None,
        head: int | None = None,
    ) -> IndexReport:
        """Index from the cursor to head − confirmations (or `to_block`), one committed range at a time.
        `head`: the chain head if the caller just read it (asked for otherwise)."""
        cursor = self.cursor(session)
        report = IndexReport(from_block=cursor.block_number + 1, to_block=cursor.block_number)
        if (cursor.block_hash and cursor.block_number >= self.deployment.start_block
                and self._block_hash(cursor.block_number) != cursor.block_hash):
            target = max(self.deployment.start_block - 1, cursor.block_number - self.reorg_depth)
            log.warning("block %d changed hash (reorg): rewinding the index to block %d",
                        cursor.block_number, target)
            self.rewind(session, target)
            report.rewound_to = target
            cursor = self.cursor(session)
            report.from_block = cursor.block_number + 1
        head = self.client.block_number() if head is None else head
        target_block = head - self.confirmations if to_block is None else min(to_block, head)
        while cursor.block_number < target_block and (max_batches is None or report.batches < max_batches):
            low = cursor.block_number + 1
            high = min(target_block, low + self.batch_blocks - 1)
            events = self.fetch(low, high)
            stored = sum(1 for _ in events)
            touched = apply.ingest(session, events)
            self.refresh_stakes(session, touched, block=high if head - high < RECENT_STATE else "latest")
            cursor.block_number, cursor.block_hash, cursor.updated_at = high, self._block_hash(high), utcnow()
            session.add(cursor)
            session.commit()
            report.events += stored
            report.batches += 1
            report.to_block = high
            report.providers.extend(sorted(touched))
            log.debug("indexed blocks %d-%d: %d events", low, high, stored)
        if report.events:
            log.info("indexed blocks %d-%d: %d events", report.from_block, report.to_block, report.events)
        return report

    def refresh_stakes(self, session: Session, providers: set[str], *, block: int | str = "latest") -> None:
        """Provider.stake read from the registry at `block`: an absolute value, whatever the unstake and
        slash rules, so replays and rewinds cannot drift from the chain."""
        for address in sorted(providers):
            fn = self._registry.functions.stakeOf(to_checksum_address(address))
            stake = int(self.client.call(fn, block=block))
            row = session.get(Provider, address) or Provider(address=address, operator=address)
            row.stake = str(stake)
            session.add(row)

    # ------------------------------------------------------------------ rewind and rebuild
    def rewind(self, session: Session, to_block: int) -> None:
        """Forget everything indexed above `to_block` and re-project what it touched (one transaction)."""
        doomed = session.exec(select(ChainEvent).where(col(ChainEvent.block_number) > to_block)).all()
        task_ids = {e.task_id for e in doomed if e.task_id is not None}
        providers = {e.account for e in doomed if e.account and e.name in apply.STAKE_EVENTS | {
            "ReplicaFinalized", "ProviderRegistered"}}
        session.execute(delete(ChainEvent).where(col(ChainEvent.block_number) > to_block))
        stash = apply.drop_tasks(session, task_ids)
        apply.reapply_stored(session, task_ids)
        apply.restore_offchain(session, stash)
        apply.refresh_totals(session, providers)
        self.refresh_stakes(session, providers)
        cursor = self.cursor(session)
        cursor.block_number = to_block
        cursor.block_hash = self._block_hash(to_block) if to_block >= self.deployment.start_block else ""
        cursor.updated_at = utcnow()
        session.add(cursor)
        session.commit()

    def rebuild(self, session: Session, *, from_block: int | None = None) -> IndexReport:
        """Drop every derived row and index again from `from_block` (default: the deployment's start block):
        the database then holds what the chain alone says, plus the off-chain parts put back (provider
        reports, placement reasons), which the chain never had."""
        start = self.deployment.start_block if from_block is None else from_block
        session.execute(delete(ChainEvent).where(col(ChainEvent.block_number) >= start))
        stash = apply.drop_tasks(session, None)
        session.execute(delete(ProviderTotals))
        session.execute(delete(ProviderReputation))  # refolded from the events; TaskCheck is kept (off chain)
        session.execute(update(Provider).values(stake="0"))
        cursor = self.cursor(session)
        cursor.block_number, cursor.block_hash, cursor.updated_at = start - 1, "", utcnow()
        session.add(cursor)
        session.commit()
        report = self.run(session)
        apply.restore_offchain(session, stash)
        session.commit()
        return report


def rebuild(
    session: Session,
    *,
    client: ChainClient,
    deployment: Deployment,
    from_block: int | None = None,
    confirmations: int = 0,
) -> IndexReport:
    """Rebuild the derived tables from the chain alone (see `Indexer.rebuild`)."""
    indexer = Indexer(client=client, deployment=deployment, confirmations=confirmations)
    return indexer.rebuild(session, from_block=from_block)
