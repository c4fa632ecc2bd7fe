"""Usage of one run, in the units billing prices: cpu-seconds, memory GB-seconds, gpu-seconds, wall seconds.

NOTE: memory GB-seconds are approximated as peak memory x wall time (an upper bound of the integral of
memory over time: backends report the peak, not a time series). GPU-seconds are the GPUs the sandbox really
had (`RunResult.gpus_attached`, read back from the engine) times wall time: an attached GPU is unavailable
to others whether or not it is busy, and a GPU the spec reserved but the run never got is never billed.
GPU utilisation and memory come from NVML while the run ran; they are reported, not priced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from provider.gpu import GpuUsage
from provider.runtimes.base import RunResult


@dataclass(frozen=True)
class Usage:
    """Metered usage of one replica, rounded to milliseconds so it can be signed and compared."""

    wall_seconds: float
    cpu_seconds: float
    memory_gb_seconds: float
    gpu_seconds: float
    peak_memory_mb: float
    gpu_utilization_pct: float = 0.0
    gpu_memory_peak_mb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(value: float) -> float:
    return round(max(0.0, float(value)), 3)


def meter(result: RunResult, *, gpu: GpuUsage | None = None) -> Usage:
    """Usage from a backend's RunResult; `gpu` is what NVML saw on the run's GPUs (None: not sampled)."""
    wall = _ms(result.wall_seconds)
    return Usage(
        wall_seconds=wall,
        cpu_seconds=_ms(result.cpu_seconds),
        memory_gb_seconds=_ms(result.peak_memory_mb / 1024.0 * wall),
        gpu_seconds=_ms(len(result.gpus_attached) * wall),
        peak_memory_mb=_ms(result.peak_memory_mb),
        gpu_utilization_pct=round(gpu.utilization_pct, 1) if gpu and result.gpus_attached else 0.0,
        gpu_memory_peak_mb=_ms(gpu.memory_peak_mb) if gpu and result.gpus_attached else 0.0,
    )


def price(usage: Usage, *, fixed: int, per_cpu_second: int, per_gb_second: int, per_gpu_second: int,
          cap: int | None = None) -> int:
    """A provider's ask for this usage in wei (rounded up), capped by the customer's max price per replica.

    Billing settles the median usage of agreeing replicas with the same formula.
    """
    total = fixed
    for amount, rate in ((usage.cpu_seconds, per_cpu_second), (usage.memory_gb_seconds, per_gb_second),
                         (usage.gpu_seconds, per_gpu_second)):
        # milli-units keep the arithmetic in integers (rates are wei per unit, amounts have 3 decimals)
        total += -(-round(amount * 1000) * rate // 1000)
    return min(total, cap) if cap is not None else total
