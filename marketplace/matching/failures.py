"""Failures remembered within a round, indexed so that a later task finds one that covers it without a walk.

Capacity only shrinks within a round, so a task that needs at least what a failed one needed, and pays no
more, fails too. A round keeps a thousand or more such failures, and a walk over all of them for every task
cost more than placing it. Here they sit in cells by (runtime, cpus, memory), each sorted by budget, highest
first: a task looks only in cells it needs at least as much as, and in each stops at the first budget below
its own.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable

from marketplace.matching.models import TaskView, Unplaced


class Failure:
    """A task that could not be placed (perhaps with a budget raised to what still fails) and why."""

    __slots__ = ("task", "why", "seq")

    def __init__(self, t: TaskView, why: Unplaced, seq: int) -> None:
        self.task, self.why, self.seq = t, why, seq


def covers(o: TaskView, t: TaskView) -> bool:
    """Whether every provider that could take `t` could also take `o` (same runtime and image assumed)."""
    need, on = t.resources, o.resources
    return (need.cpus >= on.cpus and need.memory_mb >= on.memory_mb and need.disk_mb >= on.disk_mb
            and need.gpus >= on.gpus and t.timeout_s >= o.timeout_s and t.budget <= o.budget
            and t.replicas >= o.replicas and t.priority <= o.priority
            and t.min_memory_mb >= o.min_memory_mb and t.min_gpu_memory_mb >= o.min_gpu_memory_mb
            and (t.network or not o.network)
            and (o.arch is None or t.arch == o.arch)
            and (o.gpu_model is None or t.gpu_model == o.gpu_model or not need.gpus))


_Entry = tuple[int, int, Failure]  # (-budget, seq, failure): a cell's sort order


class Failures:
    """The failures of one round; `covering` answers as a walk over all of them, oldest first, would."""

    __slots__ = ("_cells", "_seq")

    def __init__(self) -> None:
        self._cells: dict[str, dict[tuple[float, int], list[_Entry]]] = {}
        self._seq = 0

    def covering(self, t: TaskView, opens: Callable[[str], bool]) -> Failure | None:
        """The oldest failure that covers `t`: of its image, or of another image where `opens(image)` (a
        provider admitting `t`'s image but not that one could take `t`) is false."""
        cells = self._cells.get(t.runtime)
        if not cells:
            return None
        need = t.resources
        cpus, mem, budget, image = need.cpus, need.memory_mb, t.budget, t.image_digest
        best: Failure | None = None
        verdicts: dict[str, bool] = {}
        for (o_cpus, o_mem), entries in cells.items():
            if o_cpus > cpus or o_mem > mem:
                continue
            for neg_budget, seq, f in entries:
                if -neg_budget < budget:
                    break  # the rest of the cell pays less than `t` would
                if best is not None and seq > best.seq:
                    continue
                o = f.task
                if not covers(o, t):
                    continue
                if o.image_digest != image:
                    opened = verdicts.get(o.image_digest)
                    if opened is None:
                        opened = verdicts[o.image_digest] = opens(o.image_digest)
                    if opened:
                        continue
                best = f
        return best

    def add(self, t: TaskView, why: Unplaced) -> None:
        """Keep `t`'s failure, dropping earlier ones of its image that it implies."""
        cells = self._cells.setdefault(t.runtime, {})
        need = t.resources
        for (o_cpus, o_mem), entries in cells.items():
            if o_cpus >= need.cpus and o_mem >= need.memory_mb:
                entries[:] = [e for e in entries
                              if not (e[2].task.image_digest == t.image_digest and covers(t, e[2].task))]
        self._seq += 1
        cell = cells.setdefault((need.cpus, need.memory_mb), [])
        insort(cell, (-t.budget, self._seq, Failure(t, why, self._seq)))

    def drop(self, cured: Callable[[TaskView], bool]) -> None:
        """Forget the failures for which `cured(task)` holds (capacity came back where they could use it)."""
        for cells in self._cells.values():
            for entries in cells.values():
                entries[:] = [e for e in entries if not cured(e[2].task)]
