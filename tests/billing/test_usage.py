"""Signed usage reports and the median: the exact format provider.daemon signs, refused when signed by
someone else or for another task or result, and one inflating provider cannot move the bill."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from billing.errors import UsageReportInvalid
from billing.prices import MeteredUsage, PriceSheet, price
from billing.usage import (
    ReplicaInput,
    lower_median,
    median_usage,
    recover_signer,
    settle_usage,
    signed_report,
    verify_usage_report,
)
from hashgrid.config import ANVIL_DEV_KEYS
from provider.daemon import usage_report

KEYS = ANVIL_DEV_KEYS[2:6]
ADDRESSES = [Account.from_key(k).address for k in KEYS]
ACCEPTED = bytes.fromhex("11" * 32)
OTHER = bytes.fromhex("22" * 32)
SHEET = PriceSheet(fixed=10**15, per_cpu_second=10**13, per_gb_second=10**12, per_gpu_second=10**15)
CAP = 10**17


def usage(cpu: float, mem: float = 0.5, gpu: float = 0.0, wall: float = 2.0) -> dict[str, float]:
    return {"wall_seconds": wall, "cpu_seconds": cpu, "memory_gb_seconds": mem, "gpu_seconds": gpu,
            "peak_memory_mb": 256.0}


def report(i: int, *, task_id: int = 7, cpu: float = 1.5, result: bytes = ACCEPTED,
           provider: str | None = None) -> dict[str, object]:
    return usage_report(KEYS[i], task_id=task_id, provider=provider or ADDRESSES[i], usage=usage(cpu),
                        result_hash=result)


def test_a_daemon_report_verifies() -> None:
    verified = verify_usage_report(report(0), task_id=7, provider=ADDRESSES[0], accepted_hash=ACCEPTED)
    assert verified.provider == ADDRESSES[0].lower()
    assert verified.usage == MeteredUsage(cpu_ms=1_500, memory_gb_ms=500, gpu_ms=0, wall_ms=2_000)
    assert recover_signer(report(0)) == ADDRESSES[0].lower()


def test_rebuilt_from_stored_columns_verifies() -> None:
    original = report(1)
    rebuilt = signed_report(task_id=7, provider=ADDRESSES[1], usage=original["report"]["usage"],  # type: ignore[index]
                            result_hash="0x" + ACCEPTED.hex(), signature=str(original["signature"]))
    assert verify_usage_report(rebuilt, task_id=7, provider=ADDRESSES[1], accepted_hash=ACCEPTED)


def test_wrong_signer_refused() -> None:
    """Provider 1 signs a report naming provider 0: the signer is not the replica's provider."""
    forged = report(1, provider=ADDRESSES[0])
    with pytest.raises(UsageReportInvalid) as caught:
        verify_usage_report(forged, task_id=7, provider=ADDRESSES[0], accepted_hash=ACCEPTED)
    assert caught.value.reason == "wrong_signer"


def test_wrong_task_refused() -> None:
    with pytest.raises(UsageReportInvalid) as caught:
        verify_usage_report(report(0, task_id=8), task_id=7, provider=ADDRESSES[0], accepted_hash=ACCEPTED)
    assert caught.value.reason == "wrong_task"


def test_wrong_result_hash_refused() -> None:
    with pytest.raises(UsageReportInvalid) as caught:
        verify_usage_report(report(0, result=OTHER), task_id=7, provider=ADDRESSES[0], accepted_hash=ACCEPTED)
    assert caught.value.reason == "wrong_result"


def test_tampered_usage_refused() -> None:
    """Raising the usage after signing changes the recovered signer."""
    tampered = report(0)
    tampered["report"]["usage"]["cpu_seconds"] = 99.0  # type: ignore[index]
    with pytest.raises(UsageReportInvalid) as caught:
        verify_usage_report(tampered, task_id=7, provider=ADDRESSES[0], accepted_hash=ACCEPTED)
    assert caught.value.reason == "wrong_signer"


@pytest.mark.parametrize("signed", [{}, {"report": {"task_id": 7}, "signature": "0x00"},
                                    {"report": None, "signature": "0x"}])
def test_malformed_refused(signed: dict[str, object]) -> None:
    with pytest.raises(UsageReportInvalid):
        verify_usage_report(signed, task_id=7, provider=ADDRESSES[0], accepted_hash=ACCEPTED)


def test_lower_median() -> None:
    assert lower_median([5]) == 5
    assert lower_median([9, 1]) == 1  # two reports: the lower one
    assert lower_median([3, 100, 2]) == 3
    assert lower_median([4, 1, 3, 2]) == 2


def replicas(cpus: list[float], results: list[bytes] | None = None) -> list[ReplicaInput]:
    results = results or [ACCEPTED] * len(cpus)
    return [ReplicaInput(ADDRESSES[i], results[i], SHEET, report(i, cpu=c, result=results[i]))
            for i, c in enumerate(cpus)]


def test_an_inflating_provider_changes_nothing() -> None:
    honest = settle_usage(task_id=7, accepted_hash=ACCEPTED, cap=CAP, replicas=replicas([1.5, 1.5, 1.5]))
    inflated = settle_usage(task_id=7, accepted_hash=ACCEPTED, cap=CAP, replicas=replicas([1.5, 900.0, 1.5]))
    assert inflated.billed == honest.billed
    assert inflated.payments == honest.payments
    assert all(p == price(honest.billed, SHEET, CAP) for p in honest.payments.values())


def test_with_two_reports_the_lower_counts() -> None:
    plan = settle_usage(task_id=7, accepted_hash=ACCEPTED, cap=CAP, replicas=replicas([900.0, 1.5]))
    assert plan.billed.cpu_ms == 1_500


def test_dissenters_are_paid_nothing_and_their_reports_ignored() -> None:
    plan = settle_usage(task_id=7, accepted_hash=ACCEPTED, cap=CAP,
                        replicas=replicas([1.0, 2.0, 500.0], [ACCEPTED, ACCEPTED, OTHER]))
    assert plan.billed.cpu_ms == 1_000  # lower median of the two agreeing: 1.0 and 2.0
    by_provider = {r.provider: r for r in plan.replicas}
    dissenter = by_provider[ADDRESSES[2].lower()]
    assert (dissenter.agreed, dissenter.payment, dissenter.report_status) == (False, 0, "not_agreeing")


def test_each_provider_paid_on_its_own_sheet_and_capped() -> None:
    cheap, dear = PriceSheet(fixed=1, per_cpu_second=10), PriceSheet(fixed=1, per_cpu_second=10**20)
    inputs = [ReplicaInput(ADDRESSES[0], ACCEPTED, cheap, report(0, cpu=2.0)),
              ReplicaInput(ADDRESSES[1], ACCEPTED, dear, report(1, cpu=2.0))]
    plan = settle_usage(task_id=7, accepted_hash=ACCEPTED, cap=CAP, replicas=inputs)
    assert plan.payments == {ADDRESSES[0].lower(): 21, ADDRESSES[1].lower(): CAP}


def test_missing_or_forged_report_does_not_count_but_agreeing_replica_is_paid() -> None:
    inputs = replicas([1.0, 1.0])
    forged = report(3, cpu=1000.0, provider=ADDRESSES[2])  # key 3 signs in the name of provider 2
    inputs.append(ReplicaInput(ADDRESSES[2], ACCEPTED, SHEET, forged))
    inputs.append(ReplicaInput(ADDRESSES[3], ACCEPTED, SHEET, None))
    plan = settle_usage(task_id=7, accepted_hash=ACCEPTED, cap=CAP, replicas=inputs)
    assert plan.reports_used == 2 and plan.billed.cpu_ms == 1_000
    assert plan.refused == {ADDRESSES[2].lower(): "wrong_signer", ADDRESSES[3].lower(): "missing"}
    assert len(set(plan.payments.values())) == 1
    strict = settle_usage(task_id=7, accepted_hash=ACCEPTED, cap=CAP, replicas=inputs, require_report=True)
    assert strict.payments[ADDRESSES[2].lower()] == 0 and strict.payments[ADDRESSES[3].lower()] == 0


def test_no_quorum_pays_nobody() -> None:
    plan = settle_usage(task_id=7, accepted_hash=None, cap=CAP, replicas=replicas([1.0, 1.0]))
    assert plan.paid == 0 and plan.billed == MeteredUsage()


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=9), st.integers(0, 10**12))
def test_a_minority_cannot_raise_the_median(honest: list[int], inflated: int) -> None:
    """Whatever fewer than half of the reports say, the median stays within the honest reports' range."""
    cheaters = (len(honest) - 1) // 2 if len(honest) > 1 else 0
    values = honest + [inflated] * cheaters
    assert lower_median(values) <= max(honest)
    got = median_usage([MeteredUsage(cpu_ms=v) for v in values])
    assert got.cpu_ms == lower_median(values)


def test_random_key_cannot_sign_for_anyone() -> None:
    stranger = "0x" + os.urandom(32).hex()
    forged = usage_report(stranger, task_id=7, provider=ADDRESSES[0], usage=usage(1.0), result_hash=ACCEPTED)
    with pytest.raises(UsageReportInvalid):
        verify_usage_report(forged, task_id=7, provider=ADDRESSES[0], accepted_hash=ACCEPTED)
