"""The reference engine: the round's rules with the plainest candidate search, to hold the fast one to.

Same queue, scoring, taking, preemption and explanations as `engine.match`, but a task's candidates come from
sorting every provider of its (class, arch) by the strategy's key and checking each in full, and no failure is
remembered. The fast engine must place exactly as this does (tests/marketplace/test_matching_reference.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from marketplace.matching.engine import _Round, _Slot
from marketplace.matching.models import MatchConfig, MatchResult, ProviderView, TaskView, Unplaced


def reference_match(providers: Sequence[ProviderView], tasks: Iterable[TaskView], config: MatchConfig,
                    now: float) -> MatchResult:
    """`engine.match` by brute force: quadratic, for tests and a small benchmark check only."""
    return _ReferenceRound(providers, config, now).run(tasks)


class _ReferenceRound(_Round):
    """A round whose candidate search walks whole buckets and which decides every task afresh."""

    def _dominated(self, t: TaskView) -> Unplaced | None:
        return None

    def _remember(self, t: TaskView, why: Unplaced) -> None:
        return None

    def _candidates(self, t: TaskView, taken: frozenset[str]) -> list[tuple[_Slot, int]]:
        """Per arch, the first `window` feasible providers in strategy order (more until k operators)."""
        window = max(self.config.candidate_window, t.replicas)
        out: list[tuple[_Slot, int]] = []
        ops: set[str] = set()
        for arch in self._arches_for(t):
            members = sorted((s for s in self.slots.values()
                              if self._cls in s.classes and s.view.arch == arch), key=lambda s: s.key)
            for s in members:
                ask = self._feasible(s, t, taken, self._cls)
                if ask is None:
                    continue
                out.append((s, ask))
                ops.add(s.operator)
                if len(out) >= window and len(ops) >= t.replicas:
                    break
        if t.input_digests and self.digests:
            self._add_affine(t, taken, out)
        return out
