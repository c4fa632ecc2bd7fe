"""The matching engine: a pure function from providers and queued tasks to assignments, reasons, preemptions.

No database, network or clock inside: the marketplace's jobs call it and `bench.matching` measures it alone.
Where `make setup` compiled it with mypyc for exactly these sources, the compiled modules are used (`NATIVE`).
"""

from marketplace.matching import _native

NATIVE = _native.activate(__path__)  # before any compiled module is imported

from marketplace.matching.engine import match  # noqa: E402
from marketplace.matching.filters import explain, passes  # noqa: E402
from marketplace.matching.models import (  # noqa: E402
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
    "NATIVE", "Assignment", "MatchConfig", "MatchResult", "Preemption", "Prices", "ProviderView", "Resources",
    "RunningReplica", "TaskView", "Unplaced", "explain", "match", "passes",
]
