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


# failures are kept per runtime class (a task's runtime when no class is given): a failure in one class
# says nothing about another


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


# a cell's sort order, then what most often rules a failure out, then the failure:
# (-budget, seq, disk, gpus, timeout, replicas, -priority, failure)
_Entry = tuple[int, int, int, int, int, int, int, Failure]


class _Cell:
    """The failures of one (runtime, cpus, memory), highest budget first; `first` is the oldest one's seq."""

    __slots__ = ("cpus", "mem", "entries", "first")

    def __init__(self, cpus: float, mem: int) -> None:
        self.cpus, self.mem = cpus, mem
        self.entries: list[_Entry] = []
        self.first = 0


class Failures:
    """The failures of one round; `covering` answers as a walk over all of them, oldest first, would."""

    __slots__ = ("_cells", "_order", "_seq")

    def __init__(self) -> None:
        self._cells: dict[str, dict[tuple[float, int], _Cell]] = {}
        self._order: dict[str, list[_Cell]] = {}  # by runtime, oldest first failure first; rebuilt on change
        self._seq = 0

    def covering(self, t: TaskView, opens: Callable[[str], bool], cls: str | None = None) -> Failure | None:
        """The oldest failure in class `cls` that covers `t`: of its image, or of another image where
        `opens(image)` (a provider admitting `t`'s image but not that one could take `t`) is false."""
        cells = self._order.get(cls or t.runtime)
        if not cells:
            return None
        need = t.resources
        cpus, mem, disk, gpus = need.cpus, need.memory_mb, need.disk_mb, need.gpus
        budget, timeout, replicas, neg_priority = t.budget, t.timeout_s, t.replicas, -t.priority
        image = t.image_digest
        best: Failure | None = None
        oldest = self._seq + 1  # seq of `best`
        verdicts: dict[str, bool] = {}
        for cell in cells:
            if cell.first > oldest:
                break  # this cell and the rest hold only failures younger than `best`
            if cell.cpus > cpus or cell.mem > mem:
                continue
            for neg_budget, seq, o_disk, o_gpus, o_timeout, o_replicas, o_neg_priority, f in cell.entries:
                if -neg_budget < budget:
                    break  # the rest of the cell pays less than `t` would
                if (seq > oldest or o_disk > disk or o_gpus > gpus or o_timeout > timeout
                        or o_replicas > replicas or o_neg_priority > neg_priority):
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
                best, oldest = f, seq
        return best

    def add(self, t: TaskView, why: Unplaced, cls: str | None = None) -> None:
        """Keep `t`'s failure in class `cls`, dropping earlier ones of its image that it implies."""
        key = cls or t.runtime
        cells = self._cells.setdefault(key, {})
        need = t.resources
        for cell in cells.values():
            if cell.cpus >= need.cpus and cell.mem >= need.memory_mb:
                cell.entries[:] = [e for e in cell.entries if not (e[-1].task.image_digest == t.image_digest
                                                                   and covers(t, e[-1].task))]
        self._seq += 1
        size = (need.cpus, need.memory_mb)
        cell = cells.get(size) or cells.setdefault(size, _Cell(*size))
        insort(cell.entries, (-t.budget, self._seq, need.disk_mb, need.gpus, t.timeout_s, t.replicas,
                              -t.priority, Failure(t, why, self._seq)))
        self._reorder(key)

    def drop(self, cured: Callable[[TaskView], bool]) -> None:
        """Forget the failures for which `cured(task)` holds (capacity came back where they could use it)."""
        self.drop_in(lambda task, _cls: cured(task))

    def drop_in(self, cured: Callable[[TaskView, str], bool]) -> None:
        """`drop`, where `cured(task, cls)` also sees the class the failure was kept in."""
        for cls, cells in self._cells.items():
            for cell in cells.values():
                cell.entries[:] = [e for e in cell.entries if not cured(e[-1].task, cls)]
            self._reorder(cls)

    def _reorder(self, runtime: str) -> None:
        cells = self._cells[runtime]
        for cell in cells.values():
            cell.first = min((e[1] for e in cell.entries), default=0)
        self._order[runtime] = sorted((c for c in cells.values() if c.entries), key=lambda c: c.first)
