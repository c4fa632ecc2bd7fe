"""The order in which a round considers tasks: priority first, then fairness across customers, then age.

Without fairness, one customer's 10,000 queued tasks would be decided before another's single task, and could
take all the free capacity first.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from marketplace.matching.models import Fairness, TaskView


class TaskQueue:
    """Yields tasks by priority (highest first); within one, the customer served least so far goes next.

    "round_robin" charges a customer 1 per decision, "deficit" charges its dominant resource share when placed
    (DRF), "fifo" ignores customers and goes by age. Call `charge` after each task `next` returned.
    """

    __slots__ = ("_fairness", "_levels", "_heap", "_lists", "_served", "_current", "_fifo")

    def __init__(self, tasks: Iterable[TaskView], fairness: Fairness) -> None:
        self._fairness = fairness
        by_level: dict[int, dict[str, list[TaskView]]] = {}
        for t in tasks:
            by_level.setdefault(t.priority, {}).setdefault(t.customer, []).append(t)
        self._levels = sorted(by_level.items(), reverse=True)
        self._heap: list[tuple[float, float, str]] = []
        self._lists: dict[str, list[TaskView]] = {}  # reversed: pop() takes the oldest
        self._served: dict[str, float] = {}
        self._current: str | None = None
        self._fifo: list[TaskView] = []
        self._levels.reverse()  # pop() from the end takes the highest priority next

    def _load_level(self) -> bool:
        if not self._levels:
            return False
        _, customers = self._levels.pop()
        age = _age_key
        if self._fairness == "fifo":
            self._fifo = sorted((t for ts in customers.values() for t in ts), key=age, reverse=True)
            return True
        self._lists = {c: sorted(ts, key=age, reverse=True) for c, ts in customers.items()}
        self._heap = [(self._served.get(c, 0.0), ts[-1].submitted_at, c) for c, ts in self._lists.items()]
        heapq.heapify(self._heap)
        return True

    def next(self) -> TaskView | None:
        """The next task to decide, or None when the queue is empty."""
        if self._fairness == "fifo":
            while not self._fifo:
                if not self._load_level():
                    return None
            return self._fifo.pop()
        while not self._heap:
            if not self._load_level():
                return None
        _, _, customer = heapq.heappop(self._heap)
        self._current = customer
        return self._lists[customer].pop()

    def charge(self, cost: float) -> None:
        """Record what the last task cost its customer and put the customer back in line."""
        customer = self._current
        if customer is None:
            return
        self._current = None
        served = self._served.get(customer, 0.0) + (1.0 if self._fairness == "round_robin" else cost)
        self._served[customer] = served
        rest = self._lists[customer]
        if rest:
            heapq.heappush(self._heap, (served, rest[-1].submitted_at, customer))


def _age_key(t: TaskView) -> tuple[float, str]:
    return (t.submitted_at, t.task_id)
