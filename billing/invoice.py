"""A customer's invoice per task and a provider's earnings per task, as pure functions of what billing
planned (`UsageSettlement`) and of what the chain recorded (TaskPosted, TaskSettled / TaskFailed /
TaskExpired / TaskCancelled and ReplicaFinalized event values), so the API, the CLI and the explorer show
the same numbers the escrow credited. Amounts are ints in wei; `to_dict` renders them as decimal strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from billing.prices import MeteredUsage, PriceQuote
from billing.usage import UsageSettlement
from hashgrid.canonical import to_hex32
from hashgrid.chain.contracts import ChainEvent, ReplicaState

BPS = 10_000
CLOSING_EVENTS = {"TaskSettled": "settled", "TaskFailed": "failed", "TaskExpired": "expired",
                  "TaskCancelled": "cancelled"}


def escrowed_for(max_replicas: int, max_price_per_replica: int, fee_bps: int) -> int:
    """What a post locks: the replicas' caps plus the fee on them (TaskEscrow._escrowed, same rounding)."""
    base = max_replicas * max_price_per_replica
    return base + base * fee_bps // BPS


def fee_on(paid: int, fee_bps: int) -> int:
    """The protocol fee on what was paid to providers, floored as the escrow does (`paid * feeBps / BPS`)."""
    return paid * fee_bps // BPS


@dataclass(frozen=True)
class InvoiceLine:
    provider: str  # lower-case
    outcome: str  # agreed, dissented, no_show, released (chain) or not_agreeing (planned)
    payment: int
    quote: PriceQuote | None = None  # the priced parts, when billing's plan is known

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "outcome": self.outcome, "payment": str(self.payment),
                "quote": self.quote.to_dict() if self.quote else None}


@dataclass(frozen=True)
class Invoice:
    """One task's bill: `escrowed` = `paid` + `fee` + `refund` always (the escrow's own identity)."""

    task_id: int
    state: str  # planned (not on chain yet), settled, failed, expired, cancelled
    customer: str | None
    escrowed: int
    paid: int
    fee: int
    refund: int
    usage_billed: MeteredUsage | None = None
    result_hash: bytes | None = None
    lines: tuple[InvoiceLine, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id, "state": self.state, "customer": self.customer,
            "escrowed": str(self.escrowed), "paid": str(self.paid), "fee": str(self.fee),
            "refund": str(self.refund),
            "usage_billed": self.usage_billed.to_dict() if self.usage_billed else None,
            "result_hash": to_hex32(self.result_hash) if self.result_hash else None,
            "lines": [line.to_dict() for line in self.lines],
        }


def planned_invoice(settlement: UsageSettlement, *, max_replicas: int, fee_bps: int,
                    customer: str | None = None) -> Invoice:
    """The invoice billing expects the chain to produce for its plan (shown while settlement is pending)."""
    escrowed = escrowed_for(max_replicas, settlement.cap, fee_bps)
    settled = settlement.accepted_hash is not None
    paid = settlement.paid
    fee = fee_on(paid, fee_bps) if settled else 0
    lines = tuple(InvoiceLine(r.provider, "agreed" if r.agreed else "not_agreeing", r.payment, r.quote)
                  for r in settlement.replicas)
    return Invoice(settlement.task_id, "planned", customer.lower() if customer else None, escrowed, paid, fee,
                   escrowed - paid - fee, settlement.billed, settlement.accepted_hash, lines)


def _outcome_name(value: int) -> str:
    return ReplicaState(int(value)).name.lower()


def invoice_from_events(task_id: int, events: Iterable[ChainEvent],
                        settlement: UsageSettlement | None = None) -> Invoice | None:
    """The invoice as the chain recorded it, from the task's events (any order, other tasks' ignored);
    None while the task is still open. `settlement` adds the billed usage and price breakdowns."""
    mine = [e for e in events if int(e.args.get("taskId", -1)) == task_id]
    posted = next((e for e in mine if e.name == "TaskPosted"), None)
    closing = next((e for e in mine if e.name in CLOSING_EVENTS), None)
    if closing is None:
        return None
    quotes = {r.provider: r.quote for r in settlement.replicas} if settlement else {}
    lines = tuple(
        InvoiceLine(str(e.args["provider"]).lower(), _outcome_name(e.args["outcome"]), int(e.args["paid"]),
                    quotes.get(str(e.args["provider"]).lower()))
        for e in mine if e.name == "ReplicaFinalized"
    )
    refund = int(closing.args.get("refunded", 0))
    paid = int(closing.args.get("paid", 0))
    fee = int(closing.args.get("fee", 0))
    escrowed = int(posted.args["escrowed"]) if posted else paid + fee + refund
    result = bytes(closing.args["resultHash"]) if closing.name == "TaskSettled" else None
    customer = str(posted.args["customer"]).lower() if posted else None
    return Invoice(task_id, CLOSING_EVENTS[closing.name], customer, escrowed, paid, fee, refund,
                   settlement.billed if settlement else None, result,
                   tuple(sorted(lines, key=lambda line: int(line.provider, 16))))


@dataclass(frozen=True)
class ProviderEarning:
    """What one provider's replica of one task earned (credited in the escrow; withdrawn with claim)."""

    task_id: int
    provider: str
    outcome: str
    paid: int
    usage_billed: MeteredUsage | None = None
    quote: PriceQuote | None = None
    tx_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "provider": self.provider, "outcome": self.outcome,
                "paid": str(self.paid),
                "usage_billed": self.usage_billed.to_dict() if self.usage_billed else None,
                "quote": self.quote.to_dict() if self.quote else None, "tx_hash": self.tx_hash}


def provider_earnings(provider: str, events: Iterable[ChainEvent],
                      settlements: Mapping[int, UsageSettlement] | None = None) -> list[ProviderEarning]:
    """Per task, what `provider` earned, from ReplicaFinalized events (oldest first), with billing's usage and
    quote when its settlement plan is given."""
    wanted = provider.lower()
    earnings = []
    for event in events:
        if event.name != "ReplicaFinalized" or str(event.args["provider"]).lower() != wanted:
            continue
        task_id = int(event.args["taskId"])
        plan = (settlements or {}).get(task_id)
        line = next((r for r in plan.replicas if r.provider == wanted), None) if plan else None
        earnings.append(ProviderEarning(task_id, wanted, _outcome_name(event.args["outcome"]),
                                        int(event.args["paid"]), plan.billed if plan else None,
                                        line.quote if line else None, event.tx_hash))
    return earnings


def total_earned(earnings: Sequence[ProviderEarning]) -> int:
    return sum(e.paid for e in earnings)
