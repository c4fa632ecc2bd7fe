"""Price model: integer-exact, floored per component, capped by the per-replica budget, monotone in usage."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.errors import PriceInvalid
from billing.prices import MeteredUsage, PriceSheet, component, price, quote, to_milli

GRID = 10**18
SHEET = PriceSheet(fixed=10**15, per_cpu_second=10**13, per_gb_second=10**12, per_gpu_second=10**15)


def test_price_is_fixed_plus_each_component_exactly() -> None:
    usage = MeteredUsage(cpu_ms=2_500, memory_gb_ms=1_250, gpu_ms=0, wall_ms=3_000)
    # 1e15 + 2.5 * 1e13 + 1.25 * 1e12, all exact in integers
    assert price(usage, SHEET, cap=GRID) == 10**15 + 25 * 10**12 + 125 * 10**10


def test_each_component_is_floored_on_its_own() -> None:
    sheet = PriceSheet(fixed=0, per_cpu_second=3, per_gb_second=3, per_gpu_second=3)
    usage = MeteredUsage(cpu_ms=1, memory_gb_ms=1, gpu_ms=1)  # 0.003 wei each: floored to 0 each
    assert price(usage, sheet, cap=10**6) == 0
    usage = MeteredUsage(cpu_ms=334, memory_gb_ms=334, gpu_ms=334)  # 1.002 wei each: 1 each, not 3.006 -> 3
    q = quote(usage, sheet, cap=10**6)
    assert (q.cpu, q.memory, q.gpu, q.total) == (1, 1, 1, 3)


def test_cap_limits_the_total_and_says_so() -> None:
    usage = MeteredUsage(cpu_ms=10**9)
    q = quote(usage, SHEET, cap=5 * 10**15)
    assert q.subtotal > q.cap and q.capped and q.total == 5 * 10**15


def test_huge_amounts_stay_exact() -> None:
    """No float anywhere: a rate and a usage whose product exceeds 2**53 many times over is still exact."""
    sheet = PriceSheet(per_cpu_second=123_456_789_123_456_789)
    usage = MeteredUsage(cpu_ms=987_654_321_987)
    exact = 987_654_321_987 * 123_456_789_123_456_789 // 1000
    assert component(usage.cpu_ms, sheet.per_cpu_second) == exact
    assert price(usage, sheet, cap=2**96 - 1) == min(2**96 - 1, exact)


def test_usage_from_signed_report_is_exact_milli_units() -> None:
    usage = MeteredUsage.from_report({"cpu_seconds": 0.1, "memory_gb_seconds": 2.675, "gpu_seconds": 0,
                                      "wall_seconds": 1.001, "peak_memory_mb": 12.5})
    assert usage == MeteredUsage(cpu_ms=100, memory_gb_ms=2_675, gpu_ms=0, wall_ms=1_001)
    assert to_milli("0.0019", "x") == 1  # sub-milli fractions are floored, never billed
    assert to_milli(Decimal("7"), "x") == 7_000


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "abc", True, None, [1]])
def test_bad_quantities_are_refused(bad: object) -> None:
    with pytest.raises(PriceInvalid):
        to_milli(bad, "cpu_seconds")


def test_price_sheet_refuses_floats_negative_and_unknown_fields() -> None:
    assert PriceSheet.from_mapping({"fixed": "10", "per_cpu_second": 5}) == PriceSheet(10, 5, 0, 0)
    for bad in ({"fixed": 1.5}, {"fixed": -1}, {"fixed": "1e18"}, {"per_cpu_secnd": 1}):
        with pytest.raises(PriceInvalid):
            PriceSheet.from_mapping(bad)
    with pytest.raises(PriceInvalid):
        price(MeteredUsage(), SHEET, cap=2**96)


usages = st.builds(MeteredUsage, st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**12),
                   st.integers(0, 10**12))
sheets = st.builds(PriceSheet, st.integers(0, 10**20), st.integers(0, 10**20), st.integers(0, 10**20),
                   st.integers(0, 10**20))
caps = st.integers(0, 2**96 - 1)


@given(usages, sheets, caps)
def test_never_above_cap(usage: MeteredUsage, sheet: PriceSheet, cap: int) -> None:
    assert 0 <= price(usage, sheet, cap) <= cap


@given(usages, usages, sheets, caps)
def test_monotone_in_usage(a: MeteredUsage, b: MeteredUsage, sheet: PriceSheet, cap: int) -> None:
    """More of every quantity never costs less (field-wise max is >= both)."""
    more = MeteredUsage(max(a.cpu_ms, b.cpu_ms), max(a.memory_gb_ms, b.memory_gb_ms), max(a.gpu_ms, b.gpu_ms),
                        max(a.wall_ms, b.wall_ms))
    assert price(more, sheet, cap) >= max(price(a, sheet, cap), price(b, sheet, cap))


@given(usages, sheets)
def test_uncapped_price_is_the_exact_floored_sum(usage: MeteredUsage, sheet: PriceSheet) -> None:
    exact = (sheet.fixed + usage.cpu_ms * sheet.per_cpu_second // 1000
             + usage.memory_gb_ms * sheet.per_gb_second // 1000 + usage.gpu_ms * sheet.per_gpu_second // 1000)
    assert price(usage, sheet, 2**96 - 1) == min(exact, 2**96 - 1)
