"""The matching engine: a pure function from providers and queued tasks to assignments, reasons, preemptions.

No database, network or clock inside: the marketplace's jobs call it and `bench.matching` measures it alone.
"""

from marketplace.matching.engine import match
from marketplace.matching.filters import explain, passes
from marketplace.matching.models import (
    Assignment,
    MatchConfig,
    MatchResult,
    Preemption,
    Prices,
    ProviderView,
    Resources,
    RunningReplica,
    TaskView,
    Unplaced,
)

__all__ = [
    "Assignment", "MatchConfig", "MatchResult", "Preemption", "Prices", "ProviderView", "Resources",
    "RunningReplica", "TaskView", "Unplaced", "explain", "match", "passes",
]
