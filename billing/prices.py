"""Turn metered usage into a provider's price in wei, with integer arithmetic only.

Usage quantities are integer milli-units (CPU-milliseconds, GB-milliseconds of memory, GPU-milliseconds) and
rates are integer wei per whole unit, so each component is `quantity * rate // 1000`: exact, floored per
component (a fraction of a wei is never charged), and the total is capped by the task's per-replica budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from billing.errors import PriceInvalid

MILLI = 1000
UINT96_MAX = 2**96 - 1  # the escrow stores prices and payments as uint96


def to_wei(value: Any, what: str) -> int:
    """A wei amount from an int or a decimal string (as the marketplace stores amounts); no floats."""
    if isinstance(value, bool | float):
        raise PriceInvalid(f"{what} must be an integer amount of wei, got {value!r}", field=what)
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise PriceInvalid(f"{what} must be a decimal integer of wei, got {value!r}", field=what)
        value = int(text)
    if not isinstance(value, int) or value < 0:
        raise PriceInvalid(f"{what} must be a non-negative integer of wei, got {value!r}", field=what)
    return value


def to_milli(value: Any, what: str) -> int:
    """A usage quantity in whole units (as the provider signs it: a number with up to 3 decimals) as integer
    milli-units, floored. Goes through the number's shortest decimal text, so 0.1 is exactly 100 milli-units
    (the float's binary expansion 0.1000000000000000055... never leaks in)."""
    if isinstance(value, bool):
        raise PriceInvalid(f"{what} must be a number, got {value!r}", field=what)
    if isinstance(value, int):
        quantity = Decimal(value)
    elif isinstance(value, float | str | Decimal):
        try:
            quantity = Decimal(str(value).strip())
        except InvalidOperation:
            raise PriceInvalid(f"{what} is not a number: {value!r}", field=what) from None
    else:
        raise PriceInvalid(f"{what} must be a number, got {type(value).__name__}", field=what)
    if not quantity.is_finite() or quantity < 0:
        raise PriceInvalid(f"{what} must be a finite non-negative number, got {value!r}", field=what)
    return int((quantity * MILLI).to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True)
class MeteredUsage:
    """One replica's usage (or the billed median) in integer milli-units: `cpu_ms` CPU-milliseconds,
    `memory_gb_ms` GB-milliseconds of memory (peak x wall, see provider/metering.py), `gpu_ms`
    GPU-milliseconds and `wall_ms` wall-clock milliseconds (reported and shown, not priced)."""

    cpu_ms: int = 0
    memory_gb_ms: int = 0
    gpu_ms: int = 0
    wall_ms: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PriceInvalid(f"{name} must be a non-negative integer of milli-units, got {value!r}",
                                   field=name)

    @classmethod
    def from_report(cls, usage: Mapping[str, Any]) -> MeteredUsage:
        """From the `usage` of a provider's signed report (provider/metering.py Usage: seconds as numbers)."""
        try:
            return cls(
                cpu_ms=to_milli(usage.get("cpu_seconds", 0), "cpu_seconds"),
                memory_gb_ms=to_milli(usage.get("memory_gb_seconds", 0), "memory_gb_seconds"),
                gpu_ms=to_milli(usage.get("gpu_seconds", 0), "gpu_seconds"),
                wall_ms=to_milli(usage.get("wall_seconds", 0), "wall_seconds"),
            )
        except AttributeError:
            raise PriceInvalid(f"usage must be a mapping, got {type(usage).__name__}") from None

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class PriceSheet:
    """A provider's ask in wei of GRID: `fixed` per task plus a rate per whole CPU-second, GB-second of memory
    and GPU-second (provider/config.py `[prices]`)."""

    fixed: int = 0
    per_cpu_second: int = 0
    per_gb_second: int = 0
    per_gpu_second: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            to_wei(value, name)

    @classmethod
    def from_mapping(cls, prices: Mapping[str, Any]) -> PriceSheet:
        """From the provider's prices as the config or the marketplace holds them (ints or decimal strings);
        a missing rate is 0, an unknown key is refused (a typo would otherwise price something at 0)."""
        known = {"fixed", "per_cpu_second", "per_gb_second", "per_gpu_second"}
        unknown = set(prices) - known
        if unknown:
            raise PriceInvalid(f"unknown price fields {sorted(unknown)}", fields=sorted(unknown))
        return cls(**{k: to_wei(prices.get(k, 0), k) for k in sorted(known)})

    def to_dict(self) -> dict[str, str]:
        """Decimal strings: wei amounts can exceed what JSON numbers carry exactly (2**53)."""
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PriceQuote:
    """A price with its parts, for invoices: each component floored alone; total = min(subtotal, cap)."""

    fixed: int
    cpu: int
    memory: int
    gpu: int
    cap: int

    @property
    def subtotal(self) -> int:
        return self.fixed + self.cpu + self.memory + self.gpu

    @property
    def total(self) -> int:
        return min(self.subtotal, self.cap)

    @property
    def capped(self) -> bool:
        return self.subtotal > self.cap

    def to_dict(self) -> dict[str, Any]:
        return {"fixed": str(self.fixed), "cpu": str(self.cpu), "memory": str(self.memory),
                "gpu": str(self.gpu), "subtotal": str(self.subtotal), "cap": str(self.cap),
                "total": str(self.total), "capped": self.capped}


def component(quantity_milli: int, rate: int) -> int:
    """wei for `quantity_milli` milli-units at `rate` wei per whole unit, floored (exact integer division)."""
    return quantity_milli * rate // MILLI


def quote(usage: MeteredUsage, sheet: PriceSheet, cap: int) -> PriceQuote:
    """The price of `usage` on `sheet`, component by component, capped at `cap` (the per-replica budget)."""
    cap = to_wei(cap, "cap")
    if cap > UINT96_MAX:
        raise PriceInvalid(f"cap {cap} exceeds the escrow's uint96 range", cap=cap)
    return PriceQuote(
        fixed=sheet.fixed,
        cpu=component(usage.cpu_ms, sheet.per_cpu_second),
        memory=component(usage.memory_gb_ms, sheet.per_gb_second),
        gpu=component(usage.gpu_ms, sheet.per_gpu_second),
        cap=cap,
    )


def price(usage: MeteredUsage, sheet: PriceSheet, cap: int) -> int:
    """What a replica earns for `usage` on its own `sheet`: never above `cap`, monotone in every quantity."""
    return quote(usage, sheet, cap).total
