"""The matcher's inputs and outputs as frozen values: a round is a pure function, benchmarked alone.

Amounts are integers in wei of GRID (as on chain); times are seconds since the epoch (floats).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from hashgrid.errors import InvalidInput

Strategy = Literal["best_fit", "spread", "least_loaded"]
Fairness = Literal["round_robin", "deficit", "fifo"]
STRATEGIES: tuple[str, ...] = ("best_fit", "spread", "least_loaded")
FAIRNESS: tuple[str, ...] = ("round_robin", "deficit", "fifo")
WEI_PER_GRID = 10**18


@dataclass(frozen=True, slots=True)
class Resources:
    """A bundle of resources: what a replica needs, or what a provider has in total or free."""

    cpus: float = 0.0
    memory_mb: int = 0
    disk_mb: int = 0
    gpus: int = 0

    def fits_in(self, other: Resources) -> bool:
        """Whether this bundle fits inside `other`, dimension by dimension."""
        return (self.cpus <= other.cpus and self.memory_mb <= other.memory_mb
                and self.disk_mb <= other.disk_mb and self.gpus <= other.gpus)


@dataclass(frozen=True, slots=True)
class Prices:
    """A provider's price components in wei; a replica's ask = base + timeout × (rates × amounts)."""

    base: int = 0
    per_cpu_second: int = 0
    per_gb_second: int = 0
    per_gpu_second: int = 0

    def ask(self, need: Resources, timeout_s: int) -> int:
        """The provider's estimated ask for one replica that runs its full timeout (the most it can earn)."""
        rate = (int(need.cpus * self.per_cpu_second) + need.gpus * self.per_gpu_second
                + need.memory_mb * self.per_gb_second // 1024)
        return self.base + timeout_s * rate


@dataclass(frozen=True, slots=True)
class RunningReplica:
    """A replica already running on a provider: what a higher-priority task could preempt."""

    task_id: str
    priority: int
    resources: Resources


@dataclass(frozen=True, slots=True)
class ProviderView:
    """One provider as the matcher sees it: capabilities, free capacity, prices, stake, reputation, policy."""

    address: str
    operator: str
    runtimes: frozenset[str]
    arch: str
    total: Resources
    free: Resources
    prices: Prices
    stake: int
    reputation: float
    last_heartbeat: float
    gpu_model: str | None = None
    gpu_memory_mb: int = 0
    cuda_major: int | None = None
    allows_network: bool = False
    max_task: Resources | None = None  # policy: the largest replica it accepts (None = up to its capacity)
    allowed_images: frozenset[str] | None = None  # policy: digests it runs (None = any signed image)
    cached_digests: frozenset[str] = frozenset()  # input blobs it already holds (affinity)
    running: tuple[RunningReplica, ...] = ()
    # runtime classes it runs in (hashgrid/runtime_class.py): "runc", "runsc", "wasm", "runc/<gpu>/cuda12";
    # empty: it did not say, and each of its runtimes is a class of its own
    classes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class TaskView:
    """One queued task (or the extra replicas a running one needs) as the matcher sees it."""

    task_id: str
    customer: str
    runtime: str
    image_digest: str
    resources: Resources
    budget: int  # wei per replica: the customer's max price
    replicas: int = 1  # replicas needed now: k for a new task, or the extra ones for escalation
    timeout_s: int = 60
    priority: int = 0
    submitted_at: float = 0.0
    arch: str | None = None
    gpu_model: str | None = None
    min_gpu_memory_mb: int = 0
    min_memory_mb: int = 0  # "high memory": the provider's total memory, not what the replica uses
    network: bool = False
    input_digests: frozenset[str] = frozenset()
    assigned: frozenset[str] = frozenset()  # providers already running a replica: never again
    runtime_class: str | None = None  # the class its replicas already run in: extra ones must join it


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """How a round matches: the strategy, score weights, the provider floors and the queue's fairness."""

    strategy: Strategy = "best_fit"
    reputation_weight: float = 0.3
    price_weight: float = 0.3
    affinity_weight: float = 0.5
    min_stake: int = 0
    heartbeat_ttl: float = 30.0
    reputation_floor: float = 0.0
    preemption: bool = True
    fairness: Fairness = "round_robin"
    candidate_window: int = 8  # feasible providers scored per replica before picking (Nomad-style limit)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidInput(f"unknown matching strategy {self.strategy!r}; expected one of {STRATEGIES}",
                               strategy=self.strategy)
        if self.fairness not in FAIRNESS:
            raise InvalidInput(f"unknown fairness {self.fairness!r}; expected one of {FAIRNESS}",
                               fairness=self.fairness)
        if self.candidate_window < 1:
            raise InvalidInput(f"candidate_window must be at least 1, got {self.candidate_window}",
                               candidate_window=self.candidate_window)
        if self.heartbeat_ttl <= 0:
            raise InvalidInput(f"heartbeat_ttl must be positive, got {self.heartbeat_ttl}",
                               heartbeat_ttl=self.heartbeat_ttl)


@dataclass(frozen=True, slots=True)
class Assignment:
    """A task placed on distinct providers (of distinct operators), best first, all in one runtime class."""

    task_id: str
    providers: tuple[str, ...]
    runtime_class: str | None = None


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A task that stays queued, with the reason a person reads and the counts behind it.

    `code` is stable (e.g. "runtime", "budget", "busy", "operators"); `funnel` lists, filter by filter, how
    many providers were still in the running after it.
    """

    task_id: str
    code: str
    reason: str
    funnel: tuple[tuple[str, int], ...] = ()
    details: Mapping[str, int | float | str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Preemption:
    """A lower-priority replica evicted from `provider` so that `by` could run: `task_id` must be requeued."""

    task_id: str
    by: str
    provider: str


@dataclass(frozen=True, slots=True)
class MatchResult:
    """What a round decided: each task is assigned or unplaced; preempted replicas are listed apart."""

    assignments: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...]
    preemptions: tuple[Preemption, ...]

    @property
    def decisions(self) -> int:
        """Tasks decided in the round (placed or explained)."""
        return len(self.assignments) + len(self.unplaced)


def format_grid(wei: int) -> str:
    """Wei as a short GRID amount for reasons, e.g. 12 GRID or 0.25 GRID."""
    whole, rest = divmod(wei, WEI_PER_GRID)
    if rest == 0:
        return f"{whole} GRID"
    text = f"{whole}.{rest:018d}".rstrip("0")
    if len(text.split(".")[1]) > 6:
        text = f"{wei / WEI_PER_GRID:.6g}"
    return f"{text} GRID"
