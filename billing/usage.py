"""Which usage a task is billed for: verified signed reports of the replicas that agreed with the accepted
result, combined field by field with the (lower) median, so no single provider can inflate what everyone
is paid; each agreeing provider is then paid that usage on its own price sheet, capped by the budget.

Reports are the documents `provider.daemon.usage_report` signs: an EIP-191 personal-sign signature by the
provider over the canonical JSON (RFC 8785) of {task_id, provider, usage, result_hash}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from billing.errors import PriceInvalid, UsageReportInvalid
from billing.prices import MeteredUsage, PriceQuote, PriceSheet, quote
from hashgrid.canonical import canonical_json, from_hex32, to_hex32
from hashgrid.errors import InvalidInput

REPORT_FIELDS = frozenset({"task_id", "provider", "usage", "result_hash"})


def signed_report(*, task_id: int, provider: str, usage: Mapping[str, Any], result_hash: bytes | str,
                  signature: str) -> dict[str, Any]:
    """Rebuild a signed report from stored columns (the marketplace keeps usage and signature apart)."""
    digest = result_hash if isinstance(result_hash, bytes) else from_hex32(result_hash)
    document = {"task_id": task_id, "provider": provider.lower(), "usage": dict(usage),
                "result_hash": to_hex32(digest)}
    return {"report": document, "signature": signature}


def recover_signer(signed: Mapping[str, Any]) -> str:
    """The lower-case address whose key signed the report's canonical JSON (EIP-191 personal sign)."""
    try:
        document, signature = signed["report"], signed["signature"]
        message = encode_defunct(primitive=canonical_json(document))
        return str(Account.recover_message(message, signature=signature)).lower()
    except (KeyError, TypeError, ValueError, InvalidInput) as exc:
        raise UsageReportInvalid("bad_signature", f"cannot recover a signer: {exc}") from None


@dataclass(frozen=True)
class VerifiedReport:
    """A usage report whose signer, task and result hash were checked."""

    task_id: int
    provider: str  # lower-case
    usage: MeteredUsage
    result_hash: bytes
    signature: str


def verify_usage_report(signed: Mapping[str, Any], *, task_id: int, provider: str,
                        accepted_hash: bytes) -> VerifiedReport:
    """Accept a report only if `provider` (the replica's provider on chain) signed it, for this task, about
    the accepted result: a report for another task or another hash could be replayed to bill work not done."""
    document = signed.get("report") if isinstance(signed, Mapping) else None
    if not isinstance(document, Mapping) or set(document) != REPORT_FIELDS:
        raise UsageReportInvalid("malformed", f"a report needs exactly the fields {sorted(REPORT_FIELDS)}",
                                 task_id=task_id, provider=provider)
    expected = provider.lower()
    signer = recover_signer(signed)
    if signer != expected:
        raise UsageReportInvalid("wrong_signer",
                                 f"signed by {signer}, not by the replica's provider {expected}",
                                 task_id=task_id, provider=expected, signer=signer)
    if str(document["provider"]).lower() != expected:
        raise UsageReportInvalid("wrong_provider",
                                 f"names provider {document['provider']}, expected {expected}",
                                 task_id=task_id, provider=expected)
    if isinstance(document["task_id"], bool) or document["task_id"] != task_id:
        raise UsageReportInvalid("wrong_task", f"is for task {document['task_id']!r}, not {task_id}",
                                 task_id=task_id, provider=expected)
    try:
        reported_hash = from_hex32(str(document["result_hash"]))
    except InvalidInput:
        raise UsageReportInvalid("malformed", "result_hash is not a 32-byte hex digest",
                                 task_id=task_id, provider=expected) from None
    if reported_hash != bytes(accepted_hash):
        raise UsageReportInvalid("wrong_result",
                                 f"is about result {to_hex32(reported_hash)}, not the accepted "
                                 f"{to_hex32(bytes(accepted_hash))}", task_id=task_id, provider=expected)
    usage = document["usage"]
    if not isinstance(usage, Mapping):
        raise UsageReportInvalid("malformed", "usage is not an object", task_id=task_id, provider=expected)
    try:
        metered = MeteredUsage.from_report(usage)
    except PriceInvalid as exc:
        raise UsageReportInvalid("malformed", exc.message, task_id=task_id, provider=expected) from None
    return VerifiedReport(task_id, expected, metered, reported_hash, str(signed["signature"]))


def lower_median(values: Sequence[int]) -> int:
    """The middle value; of the two middle values of an even count, the lower one.

    Why the lower: raising the result above the true value then needs a strict majority of the reports to be
    above it (2 of 2, 2 of 3, 3 of 4...). With two agreeing replicas the upper median would be the larger
    report, so one inflating provider would set everyone's bill; the lower one caps it at the honest report.
    A provider that under-reports only lowers its own pay and its peers', so it has no reason to."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def median_usage(usages: Sequence[MeteredUsage]) -> MeteredUsage:
    """Per-field lower median (each field on its own: a provider cannot move one field by inflating
    another; the result may combine fields of different reports, which is the point)."""
    if not usages:
        return MeteredUsage()
    return MeteredUsage(
        cpu_ms=lower_median([u.cpu_ms for u in usages]),
        memory_gb_ms=lower_median([u.memory_gb_ms for u in usages]),
        gpu_ms=lower_median([u.gpu_ms for u in usages]),
        wall_ms=lower_median([u.wall_ms for u in usages]),
    )


@dataclass(frozen=True)
class ReplicaInput:
    """What billing needs about one assigned replica: its provider, the hash it revealed (None if it did not
    reveal), its price sheet and its signed usage report (None if it sent none)."""

    provider: str
    result_hash: bytes | None
    sheet: PriceSheet
    report: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ReplicaPayment:
    """One replica's line: whether it agreed, how its report fared, its priced quote and the payment."""

    provider: str  # lower-case
    agreed: bool
    report_status: str  # "verified", "missing", "not_agreeing" or the refusal reason
    quote: PriceQuote | None
    payment: int


@dataclass(frozen=True)
class UsageSettlement:
    """The billing side of one task's settlement: billed usage and each replica's payment."""

    task_id: int
    accepted_hash: bytes | None
    cap: int
    billed: MeteredUsage
    reports_used: int
    replicas: tuple[ReplicaPayment, ...] = field(default_factory=tuple)

    @property
    def payments(self) -> dict[str, int]:
        """provider (lower-case) -> wei, for `Escrow.build_reports` / the Settler."""
        return {r.provider: r.payment for r in self.replicas}

    @property
    def paid(self) -> int:
        return sum(r.payment for r in self.replicas)

    @property
    def refused(self) -> dict[str, str]:
        """Agreeing providers whose report was refused or missing, with why (for logs and the provider)."""
        return {r.provider: r.report_status for r in self.replicas
                if r.agreed and r.report_status != "verified"}


def settle_usage(*, task_id: int, accepted_hash: bytes | None, cap: int, replicas: Sequence[ReplicaInput],
                 require_report: bool = False) -> UsageSettlement:
    """Billed usage = per-field lower median of the agreeing replicas' verified reports; each agreeing
    provider is paid price(billed, its own sheet, cap); every other replica 0 (the escrow
    refuses anything else).

    An agreeing replica without a valid report still did the work (its hash proves it), so it is paid on the
    median of the others unless `require_report`; with no valid report at all the billed usage is zero (only
    the fixed parts are paid): missing meters never cost the customer more.
    """
    verified: dict[str, VerifiedReport] = {}
    statuses: dict[str, str] = {}
    for replica in replicas:
        provider = replica.provider.lower()
        revealed = None if replica.result_hash is None else bytes(replica.result_hash)
        if accepted_hash is None or revealed != bytes(accepted_hash):
            statuses[provider] = "not_agreeing"
            continue
        if replica.report is None:
            statuses[provider] = "missing"
            continue
        try:
            verified[provider] = verify_usage_report(replica.report, task_id=task_id, provider=provider,
                                                     accepted_hash=accepted_hash)
            statuses[provider] = "verified"
        except UsageReportInvalid as exc:
            statuses[provider] = exc.reason
    billed = median_usage([v.usage for v in verified.values()])
    lines = []
    for replica in replicas:
        provider = replica.provider.lower()
        status = statuses[provider]
        agreed = status != "not_agreeing"
        if not agreed or (require_report and status != "verified"):
            lines.append(ReplicaPayment(provider, agreed, status, None, 0))
            continue
        priced = quote(billed, replica.sheet, cap)
        lines.append(ReplicaPayment(provider, agreed, status, priced, priced.total))
    return UsageSettlement(task_id, accepted_hash, cap, billed, len(verified), tuple(lines))
