"""Compare what billing and the marketplace believe with what the chain recorded, and report every
difference (never fix anything: a person or the Settler's next run decides). The chain is the truth:
TaskPosted / TaskSettled / TaskFailed / TaskExpired / TaskCancelled / ReplicaFinalized / Claimed events and
the escrow's claimable balances, all read as of one block so the comparison is consistent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address

from billing.journal import SettlementJournal, SettlementState
from hashgrid.chain.contracts import ChainEvent, Escrow

CLOSING_EVENTS = {"TaskSettled": "settled", "TaskFailed": "failed", "TaskExpired": "expired",
                  "TaskCancelled": "cancelled"}
FINALIZED = {"TaskSettled", "TaskFailed"}  # closed by a settler's finalize (the others by anyone)


@dataclass(frozen=True)
class Difference:
    """One disagreement: `expected` is what the journal or database says, `actual` what the chain says."""

    kind: str  # see docs/billing.md, "Reconciliation"
    task_id: int | None
    account: str | None
    expected: str | None
    actual: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "task_id": self.task_id, "account": self.account,
                "expected": self.expected, "actual": self.actual, "detail": self.detail}


@dataclass(frozen=True)
class ReconciliationReport:
    block: int
    tasks_checked: int
    accounts_checked: int
    differences: tuple[Difference, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.differences

    def of_kind(self, kind: str) -> list[Difference]:
        return [d for d in self.differences if d.kind == kind]


@dataclass
class ChainLedger:
    """What the escrow's events say, folded: per task its customer, closing event and replica payments; per
    account its credits minus its claims."""

    customers: dict[int, str] = field(default_factory=dict)
    closing: dict[int, ChainEvent] = field(default_factory=dict)
    paid: dict[tuple[int, str], int] = field(default_factory=dict)  # (task, provider lower) -> wei
    balances: dict[str, int] = field(default_factory=dict)  # account lower -> credits - claims

    def _add(self, account: str, amount: int) -> None:
        key = account.lower()
        self.balances[key] = self.balances.get(key, 0) + amount

    @classmethod
    def from_events(cls, events: Iterable[ChainEvent]) -> ChainLedger:
        ledger = cls()
        treasury = ""
        for e in sorted(events, key=lambda e: (e.block_number, e.log_index)):
            args = e.args
            if e.name == "EscrowParameterChanged" and bytes(args["name"]).rstrip(b"\0") == b"treasury":
                treasury = "0x" + int(args["newValue"]).to_bytes(20, "big").hex()
            elif e.name == "TaskPosted":
                ledger.customers[int(args["taskId"])] = str(args["customer"]).lower()
            elif e.name in CLOSING_EVENTS:
                task_id = int(args["taskId"])
                ledger.closing[task_id] = e
                ledger._add(ledger.customers.get(task_id, "?"), int(args["refunded"]))
                if e.name == "TaskSettled" and int(args["fee"]):
                    ledger._add(treasury or "treasury?", int(args["fee"]))
            elif e.name == "ReplicaFinalized":
                provider = str(args["provider"]).lower()
                ledger.paid[(int(args["taskId"]), provider)] = int(args["paid"])
                ledger._add(provider, int(args["paid"]))
            elif e.name == "Claimed":
                ledger._add(str(args["account"]), -int(args["amount"]))
        return ledger


def reconcile(escrow: Escrow, journal: SettlementJournal | None = None, *,
              db_paid: Mapping[tuple[int, str], int] | None = None,
              db_states: Mapping[int, str] | None = None, task_ids: Iterable[int] | None = None,
              accounts: Iterable[str] | None = None, check_claimable: bool = True,
              block: int | None = None) -> ReconciliationReport:
    """Every difference between the journal (and `db_paid`: the marketplace's Replica.paid as
    {(task_id, provider): wei}; `db_states`: its Task.status as {task_id: status}) and the chain as of `block`
    (default: the latest).

    Kinds: confirmed_not_on_chain, journal_behind_chain, state_mismatch, amount_mismatch, payment_mismatch,
    not_in_journal, db_paid_mismatch, db_state_mismatch, claimable_mismatch, total_claimable_mismatch."""
    at = escrow.client.block_number() if block is None else block
    ledger = ChainLedger.from_events(escrow.events(to_block=at))
    wanted = set(task_ids) if task_ids is not None else None
    diffs: list[Difference] = []
    checked: set[int] = set()

    rows = journal.rows(task_ids=wanted) if journal is not None else []
    journaled = {row.task_id for row in rows}
    for row in rows:
        checked.add(row.task_id)
        diffs.extend(_check_row(row, ledger))
    if journal is not None:
        for task_id, event in sorted(ledger.closing.items()):
            if event.name in FINALIZED and task_id not in journaled and (wanted is None or task_id in wanted):
                checked.add(task_id)
                diffs.append(Difference("not_in_journal", task_id, None, None, CLOSING_EVENTS[event.name],
                                        f"finalized on chain by tx {event.tx_hash} with no journal row"))
    for (task_id, provider), amount in sorted((db_paid or {}).items()):
        if wanted is not None and task_id not in wanted:
            continue
        checked.add(task_id)
        on_chain = ledger.paid.get((task_id, provider.lower()), 0)
        if int(amount) != on_chain:
            diffs.append(Difference("db_paid_mismatch", task_id, provider.lower(), str(amount), str(on_chain),
                                    "the marketplace's Replica.paid differs from ReplicaFinalized"))
    for task_id, status in sorted((db_states or {}).items()):
        if wanted is not None and task_id not in wanted:
            continue
        closing = ledger.closing.get(task_id)
        chain_state = CLOSING_EVENTS[closing.name] if closing is not None else "open"
        if (status in CLOSING_EVENTS.values() or chain_state != "open") and status != chain_state:
            checked.add(task_id)
            diffs.append(Difference("db_state_mismatch", task_id, None, status, chain_state,
                                    "the marketplace's Task.status differs from the task's closing event"))
    counted = 0
    if check_claimable:
        counted, found = _check_claimable(escrow, ledger, accounts, at)
        diffs.extend(found)
    return ReconciliationReport(at, len(checked), counted, tuple(diffs))


def _check_row(row: Any, ledger: ChainLedger) -> list[Difference]:
    task_id = row.task_id
    event = ledger.closing.get(task_id)
    if event is None:
        if row.state == SettlementState.CONFIRMED:
            return [Difference("confirmed_not_on_chain", task_id, None, row.chain_state, "open",
                               "the journal says confirmed but the task is not closed on chain")]
        return []
    chain_state = CLOSING_EVENTS[event.name]
    if row.state != SettlementState.CONFIRMED:
        return [Difference("journal_behind_chain", task_id, None, str(row.state), chain_state,
                           f"closed on chain by tx {event.tx_hash}; the Settler's next run confirms it")]
    diffs = []
    if row.chain_state != chain_state:
        diffs.append(Difference("state_mismatch", task_id, None, row.chain_state, chain_state,
                                "the journal recorded another closing"))
    args = event.args
    for name, recorded, arg in (("paid", row.chain_paid, "paid"), ("fee", row.chain_fee, "fee"),
                                ("refund", row.chain_refund, "refunded")):
        actual = int(args.get(arg, 0))
        if recorded is not None and int(recorded) != actual:
            diffs.append(Difference("amount_mismatch", task_id, None, recorded, str(actual),
                                    f"journaled {name} differs from {event.name}"))
    for report in row.reports or []:
        provider = report["provider"].lower()
        actual = ledger.paid.get((task_id, provider), 0)
        if int(report["payment"]) != actual:
            diffs.append(Difference("payment_mismatch", task_id, provider, report["payment"], str(actual),
                                    "the journal's report pays a different amount than ReplicaFinalized"))
    return diffs


def _check_claimable(escrow: Escrow, ledger: ChainLedger, accounts: Iterable[str] | None,
                     at: int) -> tuple[int, list[Difference]]:
    diffs = []
    names = [a.lower() for a in accounts] if accounts is not None else sorted(ledger.balances)
    for account in names:
        if not account.startswith("0x"):
            continue
        actual = int(escrow.client.call(escrow.fn("claimable", to_checksum_address(account)), block=at))
        expected = ledger.balances.get(account, 0)
        if actual != expected:
            diffs.append(Difference("claimable_mismatch", None, account, str(expected), str(actual),
                                    "credits minus claims from events differ from claimable()"))
    total = int(escrow.client.call(escrow.fn("totalClaimable"), block=at))
    expected_total = sum(ledger.balances.values())
    if total != expected_total:
        diffs.append(Difference("total_claimable_mismatch", None, None, str(expected_total), str(total),
                                "the sum of credits minus claims differs from totalClaimable()"))
    return len(names), diffs
