"""One matching round: providers and queued tasks in, assignments, explanations and preemptions out.

Fast because it never scans every provider per task: eligible providers sit in (runtime, arch) buckets kept
sorted by free capacity, a task bisects to the first provider that can hold it and scores a small window of
feasible ones; a task shape that failed once in a round fails again without a scan (capacity only shrinks).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import replace
from operator import attrgetter
from types import MappingProxyType
from typing import Any

from mypy_extensions import mypyc_attr

from marketplace.matching import filters
from marketplace.matching.failures import Failures
from marketplace.matching.funnel import Free, Funnel
from marketplace.matching.models import (
    Assignment,
    MatchConfig,
    MatchResult,
    Preemption,
    ProviderView,
    Resources,
    RunningReplica,
    TaskView,
    Unplaced,
    format_grid,
)
from marketplace.matching.queue import TaskQueue

_Key = tuple[Any, ...]
_FREE = ("cpus", "mem", "disk", "gpus")  # a slot's free capacity, in `Free` order
_NO_RUNNING = 2**63  # `_Slot.low` of a provider with nothing running: no priority is above it


class _Slot:
    """A provider's mutable state within one round: free capacity and its current sort key."""

    __slots__ = ("view", "rank", "address", "operator", "cpus", "mem", "disk", "gpus", "total_cpus",
                 "total_gpus", "key", "orders", "special", "base", "per_cpu", "per_gb", "per_gpu",
                 "reputation", "cached", "running", "net", "total_mem", "low", "images", "cap", "total",
                 "held", "classes", "kinds")

    def __init__(self, view: ProviderView, rank: int, kinds: list[tuple[str, str, bool]]) -> None:
        self.view = view
        self.rank = rank
        self.address = view.address
        self.operator = view.operator
        self.cpus = view.free.cpus
        self.mem = view.free.memory_mb
        self.disk = view.free.disk_mb
        self.gpus = view.free.gpus
        self.total_cpus = view.total.cpus or 1.0
        self.total_gpus = view.total.gpus or 1
        self.key: _Key = ()
        self.orders: list[list[_Key]] = []
        # policy or capability that some task may trip over: checked in full only when set
        self.special = view.allowed_images is not None or view.max_task is not None
        prices = view.prices
        self.base, self.per_cpu = prices.base, prices.per_cpu_second
        self.per_gb, self.per_gpu = prices.per_gb_second, prices.per_gpu_second
        self.reputation = view.reputation
        self.net = view.allows_network
        self.total_mem = view.total.memory_mb
        self.images = view.allowed_images
        self.cap = view.max_task
        self.total = view.total
        self.cached = view.cached_digests
        self.running: list[RunningReplica] = list(view.running)
        self.low = min((r.priority for r in self.running), default=_NO_RUNNING)  # what it may evict: below
        self.held = self._held()
        self.kinds = kinds  # (class, runtime, for GPU work) of each class it runs: what the round buckets by
        self.classes = frozenset(c for c, _, _ in kinds)

    def _held(self) -> tuple[float, int]:
        """Cpus and memory its running replicas hold: the most an eviction could free."""
        return (sum(r.resources.cpus for r in self.running), sum(r.resources.memory_mb for r in self.running))

    def evict(self, r: RunningReplica) -> None:
        """Drop a preempted replica (its resources come back through `_Round._rekey`)."""
        self.running.remove(r)
        self.low = min((x.priority for x in self.running), default=_NO_RUNNING)
        self.held = self._held()

    def free(self) -> Resources:
        return Resources(self.cpus, self.mem, self.disk, self.gpus)

    def free_dims(self) -> Free:
        return (self.cpus, self.mem, self.disk, self.gpus)


def _key_best_fit(s: _Slot) -> _Key:
    return (s.gpus, s.cpus, s.mem, s.rank, s)


def _key_spread(s: _Slot) -> _Key:
    return (s.gpus, -s.cpus, -s.mem, s.rank, s)


def _key_least_loaded(s: _Slot) -> _Key:
    return (s.gpus, 1.0 - s.cpus / s.total_cpus, s.rank, s)


_TIERS = 1
_UNLIMITED = 2**256


def _price_tiers(slots: list[_Slot]) -> dict[str, int]:
    """Quartile of each provider's reference price (a one-minute, one-core, 1 GB replica): cheap ones first.

    Buckets split by tier let a low-budget task skip whole tiers by their cheapest components.
    """
    ref = sorted((s.base + 60 * (s.per_cpu + s.per_gb), s.address) for s in slots)
    n = len(ref) or 1
    return {address: min(_TIERS - 1, i * _TIERS // n) for i, (_, address) in enumerate(ref)}


_STATE_CODES = frozenset({"busy", "operators"})


def _lend(u: Unplaced, t: TaskView, o: TaskView) -> Unplaced:
    """`u` (why `o` failed) as the reason for `t`, which `o` covers, with the budget stated as `t`'s."""
    details = dict(u.details)
    details["as_for"] = u.task_id
    reason = u.reason
    if u.code == "budget":
        lowest = int(details["lowest_ask"])
        same = t.resources == o.resources and t.timeout_s == o.timeout_s
        details["budget"] = t.budget
        reason = (f"{details['over_budget']} providers match but all asks exceed the budget (lowest ask "
                  f"{'' if same else 'at least '}{format_grid(lowest)} > {format_grid(t.budget)})")
    return Unplaced(t.task_id, u.code, reason, u.funnel, MappingProxyType(details))


_Eviction = tuple[_Slot, list[RunningReplica], int]  # provider, victims, ask for the task


_KEYS = {"best_fit": _key_best_fit, "spread": _key_spread, "least_loaded": _key_least_loaded}


class _Bucket:
    """Eligible providers of one (runtime, arch): all members, and those sorted by the strategy's key."""

    __slots__ = ("members", "runners", "order", "floor")

    def __init__(self) -> None:
        self.members: list[_Slot] = []
        self.runners: list[_Slot] = []  # members with running replicas: what preemption looks at
        self.order: list[_Key] = []
        self.floor = (0, 0, 0, 0)  # lowest price components: a lower bound of any member's ask

    def seal(self) -> None:
        ms = self.members
        self.runners = [s for s in ms if s.running]
        self.floor = (min(s.base for s in ms), min(s.per_cpu for s in ms),
                      min(s.per_gb for s in ms), min(s.per_gpu for s in ms))


def match(providers: Sequence[ProviderView], tasks: Iterable[TaskView], config: MatchConfig,
          now: float) -> MatchResult:
    """Decide every task once: assign `replicas` distinct providers of distinct operators, or say why not.

    Tasks go by priority, then fairness across customers, then age; each placement takes its resources from
    the providers before the next task is decided. Same inputs, same result (ties break by address).
    """
    return _Round(providers, config, now).run(tasks)


@mypyc_attr(allow_interpreted_subclasses=True)  # the reference engine and tests subclass it
class _Round:
    """The state of one round; `run` is the only entry point."""

    def __init__(self, providers: Sequence[ProviderView], config: MatchConfig, now: float) -> None:
        self.config = config
        self.now = now
        self.providers = providers
        self.key = _KEYS[config.strategy]
        ordered = sorted(providers, key=lambda p: p.address)
        self.by_address = {p.address: p for p in ordered}
        steps: list[tuple[str, int]] = [("providers", len(ordered))]
        eligible: list[ProviderView] = ordered
        for code, pred in filters.PROVIDER_FILTERS:
            eligible = [p for p in eligible if pred(p, config, now)]
            steps.append((code, len(eligible)))
        self.steps = tuple(steps)
        self.eligible = eligible
        kinds: dict[tuple[frozenset[str], frozenset[str]], list[tuple[str, str, bool]]] = {}
        for p in eligible:  # few distinct (runtimes, classes) in a fleet: worked out once each
            if (p.runtimes, p.classes) not in kinds:
                kinds[(p.runtimes, p.classes)] = filters.slot_classes(p)
        self.slots = {p.address: _Slot(p, rank, kinds[(p.runtimes, p.classes)])
                      for rank, p in enumerate(eligible)}
        self.buckets: dict[tuple[str, str], list[_Bucket]] = {}  # (runtime class, arch) -> price tiers
        self.arches: dict[str, list[str]] = {}  # runtime class -> arches
        self.classes: dict[tuple[str, bool], list[str]] = {}  # (runtime, GPU work) -> runtime classes
        self._cls = ""  # the runtime class the task being decided is tried in
        self._picked_score = 0.0  # the summed score of what `_pick` last chose
        self.digests: dict[str, list[_Slot]] = {}
        tier_of = _price_tiers(list(self.slots.values()))
        for s in self.slots.values():
            s.key = self.key(s)
            for cls, runtime, gpu in s.kinds:
                known = self.classes.setdefault((runtime, gpu), [])
                if cls not in known:
                    known.append(cls)
                tiers = self.buckets.get((cls, s.view.arch))
                if tiers is None:
                    tiers = self.buckets[(cls, s.view.arch)] = [_Bucket() for _ in range(_TIERS)]
                    self.arches.setdefault(cls, []).append(s.view.arch)
                elif s.orders and s.orders[-1] is tiers[tier_of[s.address]].order:
                    continue  # a class for CPU and GPU work alike: one bucket
                bucket = tiers[tier_of[s.address]]
                bucket.members.append(s)
                bucket.order.append(s.key)
                s.orders.append(bucket.order)
            for digest in s.cached:
                self.digests.setdefault(digest, []).append(s)
        for key, tiers in self.buckets.items():
            tiers = self.buckets[key] = [b for b in tiers if b.members]
            for bucket in tiers:
                bucket.order.sort()
                bucket.seal()
        for arches in self.arches.values():
            arches.sort()
        for known in self.classes.values():
            known.sort()
        self.max_cpus = max((s.total_cpus for s in self.slots.values()), default=1.0)
        self.cluster = (sum(s.total_cpus for s in self.slots.values()) or 1.0,
                        sum(p.total.memory_mb for p in eligible) or 1,
                        sum(p.total.gpus for p in eligible) or 1)
        self.preemptible = config.preemption and any(s.running for s in self.slots.values())
        self.failed = Failures()
        self.by_image: dict[str, list[_Slot]] = {}
        for s in self.slots.values():
            for image in sorted(s.view.allowed_images or ()):
                self.by_image.setdefault(image, []).append(s)
        self.lowest_running = min((r.priority for s in self.slots.values() for r in s.running), default=0)
        by_rank = list(self.slots.values())
        self.funnel = Funnel(eligible, config, self.steps, lambda rank: by_rank[rank].free_dims(),
                             free_column=lambda dim: list(map(attrgetter(_FREE[dim]), by_rank)))
        self.preemptions: list[Preemption] = []

    # ------------------------------------------------------------------ the round

    def run(self, tasks: Iterable[TaskView]) -> MatchResult:
        assignments: list[Assignment] = []
        unplaced: list[Unplaced] = []
        queue = TaskQueue(tasks, self.config.fairness)
        while (t := queue.next()) is not None:
            result = self._decide(t)
            if isinstance(result, Unplaced):
                unplaced.append(result)
                queue.charge(0.0)
            else:
                assignments.append(result)
                queue.charge(self._share(t))
        return MatchResult(tuple(assignments), tuple(unplaced), tuple(self.preemptions))

    def _decide(self, t: TaskView) -> Assignment | Unplaced:
        if t.replicas <= 0:
            return Assignment(t.task_id, (), t.runtime_class)
        present = self.classes.get((t.runtime, t.resources.gpus > 0))
        if t.runtime_class is not None:  # a class no provider here runs it in has no bucket: explained
            classes = [t.runtime_class if present and t.runtime_class in present else f"\0{t.runtime_class}"]
        else:
            classes = present or [t.runtime]
        if len(classes) > 1:
            return self._decide_among(t, classes)
        cls = self._cls = classes[0]
        if not t.assigned:
            known = self._dominated(t)
            if known is not None:
                return known
        taken = self._taken_operators(t)
        cands = self._candidates(t, taken)
        picked = self._pick(t, cands)
        preempted = False
        evictions: list[_Eviction] = []
        if picked is None and self.preemptible and t.priority > self.lowest_running:
            evictions = self._evictions(t, taken)
            picked = self._preempt(t, cands, evictions)
            preempted = picked is not None
        if picked is None:
            why = self._explain(t, taken)
            if not t.assigned:
                self._remember(self._capacity_bound(t, why, evictions), why)
            return why
        self._take(t, picked)
        if preempted:
            self._forget(picked)
        return Assignment(t.task_id, tuple(s.address for s in picked), cls)

    def _decide_among(self, t: TaskView, classes: list[str]) -> Assignment | Unplaced:
        """A new task that more than one runtime class could run: every replica in one class, the class whose
        best k providers score highest (ties: the class name); by preemption only when no class fits now.
        Failures are not remembered here: they would have to hold for every class at once."""
        taken = self._taken_operators(t)
        best: tuple[float, str, list[_Slot]] | None = None
        tried: list[tuple[str, list[tuple[_Slot, int]]]] = []
        for cls in classes:
            self._cls = cls
            cands = self._candidates(t, taken)
            tried.append((cls, cands))
            picked = self._pick(t, cands)
            if picked is not None:
                score = self._picked_score
                if best is None or score > best[0]:
                    best = (score, cls, picked)
        if best is None and self.preemptible and t.priority > self.lowest_running:
            for cls, cands in tried:
                self._cls = cls
                picked = self._preempt(t, cands, self._evictions(t, taken))
                if picked is not None:
                    self._take(t, picked)
                    self._forget(picked)
                    return Assignment(t.task_id, tuple(s.address for s in picked), cls)
        if best is None:
            return self._explain(t, taken)
        _, cls, picked = best
        self._cls = cls
        self._take(t, picked)
        return Assignment(t.task_id, tuple(s.address for s in picked), cls)

    def _dominated(self, t: TaskView) -> Unplaced | None:
        """If an earlier task that any provider able to take `t` could also take failed, `t` fails too.

        Capacity only shrinks within a round (a preemption drops the failures it may have cured), so no scan
        is needed. A failure for lack of free providers or operators lends its reason; others are recounted.
        """
        feasible: list[frozenset[str]] | None = None

        def opens(other_image: str) -> bool:
            """Whether a provider that admits `t`'s image but not `other_image` could take `t` now."""
            nonlocal feasible
            if feasible is None:
                need = t.resources
                feasible = [images for s in self.by_image.get(t.image_digest, ())
                            if s.cpus >= need.cpus and s.mem >= need.memory_mb  # most are full: say so fast
                            and (images := s.view.allowed_images) is not None
                            and self._feasible(s, t, frozenset(), self._cls) is not None]
            return any(other_image not in images for images in feasible)

        f = self.failed.covering(t, opens, self._cls)
        return None if f is None else _lend(f.why, t, f.task)

    def _capacity_bound(self, t: TaskView, why: Unplaced, evictions: list[_Eviction]) -> TaskView:
        """`t` with the largest budget at which it still fails now, so that its failure covers richer tasks.

        Budgets grow with task size, so a failure kept at its own budget rarely covers another task. For a
        "busy" failure the bound is one wei under the k-th lowest ask among distinct operators that have room
        or could make it by eviction (the budget that would place it). With fewer than k such operators no
        budget helps (then the timeout no longer matters either), which also holds for "operators".
        """
        if why.code not in _STATE_CODES:
            return t
        rich = replace(t, budget=_UNLIMITED)
        out: list[tuple[_Slot, int]] = []
        ops: set[str] = set()
        for arch in self._arches_for(t):
            for bucket in self.buckets[(self._cls, arch)]:
                self._scan(bucket.order, rich, frozenset(), len(bucket.order) + 1, out, ops)
        lowest: dict[str, int] = {}
        for s, ask in [*out, *((s, ask) for s, _, ask in evictions)]:
            if ask < lowest.get(s.operator, _UNLIMITED):
                lowest[s.operator] = ask
        if len(lowest) < t.replicas:
            return replace(rich, timeout_s=0)
        if why.code != "busy":
            return t  # a richer task could fail for another reason ("busy"): keep the budget
        kth = sorted(lowest.values())[t.replicas - 1]
        return replace(t, budget=max(t.budget, kth - 1))

    def _remember(self, t: TaskView, why: Unplaced) -> None:
        self.failed.add(t, why, self._cls)

    def _forget(self, cured: list[_Slot]) -> None:
        """After a preemption changed `cured`, drop the failures one of them could now serve, or might by
        evicting (what is left to evict there is reshuffled)."""
        self.failed.drop_in(lambda o, cls: any(self._feasible(s, o, frozenset(), cls) is not None
                                               or (o.priority > s.low and self._static_ok(s, o))
                                               for s in cured))

    def _share(self, t: TaskView) -> float:
        """The task's dominant share of the eligible cluster (what "deficit" fairness charges)."""
        need, (cpus, mem, gpus) = t.resources, self.cluster
        return t.replicas * max(need.cpus / cpus, need.memory_mb / mem, need.gpus / gpus)

    def _taken_operators(self, t: TaskView) -> frozenset[str]:
        if not t.assigned:
            return frozenset()
        return frozenset(self.by_address[a].operator for a in t.assigned if a in self.by_address)

    # ------------------------------------------------------------------ candidates

    def _arches_for(self, t: TaskView) -> list[str]:
        arches = self.arches.get(self._cls, [])
        if t.arch is None:
            return arches
        return [t.arch] if t.arch in arches else []

    def _candidates(self, t: TaskView, taken: frozenset[str]) -> list[tuple[_Slot, int]]:
        """Feasible providers with their asks: a window per bucket, grown until k operators are among them."""
        need = t.resources
        need_c, need_m, need_g = need.cpus, need.memory_mb, need.gpus
        window = max(self.config.candidate_window, t.replicas)
        out: list[tuple[_Slot, int]] = []
        ops: set[str] = set()
        for arch in self._arches_for(t):
            for bucket in self.buckets[(self._cls, arch)]:
                base, pc, pm, pg = bucket.floor
                if base + t.timeout_s * (int(need_c * pc) + need_g * pg + need_m * pm // 1024) > t.budget:
                    continue  # even the cheapest components together ask more than the budget
                if self._scan(bucket.order, t, taken, window, out, ops):
                    break  # enough in this arch: dearer tiers would only lose on price
        if t.input_digests and self.digests:
            self._add_affine(t, taken, out)
        return out

    def _scan(self, order: list[_Key], t: TaskView, taken: frozenset[str], window: int,
              out: list[tuple[_Slot, int]], ops: set[str]) -> bool:
        """Walk a bucket in strategy order from the first provider that can hold a replica; True when full."""
        need = t.resources
        need_c, need_m, need_d, need_g = need.cpus, need.memory_mb, need.disk_mb, need.gpus
        budget, timeout, k = t.budget, t.timeout_s, t.replicas
        net, min_mem, assigned, image = t.network, t.min_memory_mb, t.assigned, t.image_digest
        best_fit, spread = self.config.strategy == "best_fit", self.config.strategy == "spread"
        check_fit = not best_fit  # best fit's key already holds cpus and memory at or above the need
        n = len(order)
        found = len(out)
        i = bisect_left(order, (need_g, need_c) if best_fit else (need_g,))
        while i < n:
            e = order[i]
            if best_fit:
                if e[1] < need_c:  # a new GPU group starts below the cpus needed: jump within it
                    i = bisect_left(order, (e[0], need_c), i + 1)
                    continue
                if e[2] < need_m:  # too little memory: skip to the first with enough, same gpus and cpus
                    i = bisect_left(order, (e[0], e[1], need_m), i + 1)
                    continue
            elif spread and -e[1] < need_c:  # the rest of this GPU group is smaller
                i = bisect_left(order, (e[0] + 1,), i + 1)
                continue
            i += 1
            s: _Slot = e[-1]
            if s.disk < need_d or (check_fit and (s.cpus < need_c or s.mem < need_m)):
                continue
            # the budget rules out most of those skipped: ask first (Prices.ask's arithmetic)
            rate = int(need_c * s.per_cpu) + need_m * s.per_gb // 1024
            ask = s.base + timeout * (rate + need_g * s.per_gpu if need_g else rate)
            if ask > budget or (taken and s.operator in taken):
                continue
            if ((net and not s.net) or (min_mem and s.total_mem < min_mem)
                    or (assigned and s.address in assigned)):
                continue
            if need_g:
                if not self._static_ok(s, t):
                    continue
            elif s.special and ((s.images is not None and image not in s.images) or not need.fits_in(s.total)
                                or (s.cap is not None and not need.fits_in(s.cap))):
                continue  # what `_static_ok` checks that is not checked above, for a task without GPUs
            out.append((s, ask))
            ops.add(s.operator)
            found += 1
            if found >= window and len(ops) >= k:
                return True
        return False

    @staticmethod
    def _static_ok(s: _Slot, t: TaskView) -> bool:
        """Capabilities and policy that the sort order does not already guarantee."""
        p = s.view
        need = t.resources
        if need.gpus and not filters.has_gpu_model(p, t):
            return False
        return (p.total.memory_mb >= t.min_memory_mb
                and (not t.network or p.allows_network)
                and (p.allowed_images is None or t.image_digest in p.allowed_images)
                and (p.max_task is None or need.fits_in(p.max_task))
                and p.address not in t.assigned
                and need.fits_in(p.total))

    def _feasible(self, s: _Slot, t: TaskView, taken: frozenset[str], cls: str) -> int | None:
        """The ask of `s` for `t` if it may take a replica now, else None (the slow, complete check)."""
        need = t.resources
        p = s.view
        if (cls not in s.classes or (t.arch is not None and p.arch != t.arch)
                or need.cpus > s.cpus or need.memory_mb > s.mem or need.disk_mb > s.disk
                or need.gpus > s.gpus or s.operator in taken or not self._static_ok(s, t)):
            return None
        ask = p.prices.ask(need, t.timeout_s)
        return ask if ask <= t.budget else None

    def _add_affine(self, t: TaskView, taken: frozenset[str], out: list[tuple[_Slot, int]]) -> None:
        """Providers already holding some of the task's inputs compete even outside the window."""
        seen = {s.address for s, _ in out}
        for digest in sorted(t.input_digests):
            for s in self.digests.get(digest, ()):
                if s.address in seen:
                    continue
                seen.add(s.address)
                ask = self._feasible(s, t, taken, self._cls)
                if ask is not None:
                    out.append((s, ask))

    # ------------------------------------------------------------------ choosing and taking

    def _pick(self, t: TaskView, cands: list[tuple[_Slot, int]]) -> list[_Slot] | None:
        """The best-scoring candidates, one per operator, or None if fewer than k operators can take it."""
        k = t.replicas
        if len({s.operator for s, _ in cands}) < k:
            return None
        cfg = self.config
        need = t.resources
        rw, pw, aw = cfg.reputation_weight, cfg.price_weight, cfg.affinity_weight
        inputs = t.input_digests
        n_inputs = len(inputs)
        budget = t.budget or 1
        gpu_task = need.gpus > 0
        strategy = cfg.strategy
        scored: list[tuple[float, int, _Slot]] = []
        for s, ask in cands:
            if gpu_task:
                left = (s.gpus - need.gpus) / s.total_gpus
            else:
                left = (s.cpus - need.cpus) / (self.max_cpus if strategy == "spread" else s.total_cpus)
            fit = 1.0 - left if strategy == "best_fit" else left
            score = fit + rw * s.reputation - pw * ask / budget
            if n_inputs and s.cached:
                score += aw * len(inputs & s.cached) / n_inputs
            scored.append((-score, s.rank, s))
        scored.sort(key=lambda x: (x[0], x[1]))
        picked: list[_Slot] = []
        ops: set[str] = set()
        total = 0.0
        for neg, _, s in scored:
            if s.operator not in ops:
                ops.add(s.operator)
                picked.append(s)
                total -= neg
                if len(picked) == k:
                    break
        self._picked_score = total
        return picked

    def _rekey(self, s: _Slot, change: Resources, sign: int) -> None:
        """Move `s` in every bucket order after its free capacity changes by `sign` × `change`."""
        old = s.key
        for order in s.orders:
            del order[bisect_left(order, old)]
        was = s.free_dims()
        s.cpus += sign * change.cpus
        s.mem += sign * change.memory_mb
        s.disk += sign * change.disk_mb
        s.gpus += sign * change.gpus
        self.funnel.moved(s.rank, was, s.free_dims())
        s.key = self.key(s)
        for order in s.orders:
            insort(order, s.key)

    def _take(self, t: TaskView, picked: list[_Slot]) -> None:
        for s in picked:
            self._rekey(s, t.resources, -1)

    # ------------------------------------------------------------------ preemption

    def _evictions(self, t: TaskView, taken: frozenset[str]) -> list[_Eviction]:
        """Providers that lack room for `t` now but would have it after evicting lower-priority replicas
        (lowest priority first, then by task id), with the victims and the ask, whatever the budget."""
        need = t.resources
        need_c, need_m, need_d, need_g = need.cpus, need.memory_mb, need.disk_mb, need.gpus
        priority, timeout = t.priority, t.timeout_s
        out: list[_Eviction] = []
        for arch in self._arches_for(t):
            for bucket in self.buckets[(self._cls, arch)]:
                for s in bucket.runners:
                    if s.low >= priority or s.operator in taken:
                        continue
                    if need_c <= s.cpus and need_m <= s.mem and need_d <= s.disk and need_g <= s.gpus:
                        continue  # room now: a candidate already, if it passes the rest
                    held_c, held_m = s.held
                    if s.cpus + held_c < need_c or s.mem + held_m < need_m:
                        continue  # evicting everything would not make room
                    if not self._static_ok(s, t):
                        continue
                    cpus, mem, disk, gpus = s.cpus, s.mem, s.disk, s.gpus
                    victims: list[RunningReplica] = []
                    for r in sorted((r for r in s.running if r.priority < priority),
                                    key=lambda r: (r.priority, r.task_id)):
                        res = r.resources
                        cpus += res.cpus
                        mem += res.memory_mb
                        disk += res.disk_mb
                        gpus += res.gpus
                        victims.append(r)
                        if need_c <= cpus and need_m <= mem and need_d <= disk and need_g <= gpus:
                            out.append((s, victims, s.view.prices.ask(need, timeout)))
                            break
        return out

    def _preempt(self, t: TaskView, cands: list[tuple[_Slot, int]],
                 evictions: list[_Eviction]) -> list[_Slot] | None:
        """Place `t` by evicting lower-priority running replicas, fewest and lowest first; None if that fails.

        `cands` are all providers that can take `t` without evicting (the scan ran to its end to find them).
        """
        options: list[tuple[tuple[int, int, int, int], _Slot, list[RunningReplica]]] = [
            ((0, 0, 0, s.rank), s, []) for s, _ in cands]
        options += [((1, len(victims), victims[-1].priority, s.rank), s, victims)
                    for s, victims, ask in evictions if ask <= t.budget]
        options.sort(key=lambda o: o[0])
        chosen: list[tuple[_Slot, list[RunningReplica]]] = []
        ops: set[str] = set()
        for _, s, victims in options:
            if s.operator not in ops:
                ops.add(s.operator)
                chosen.append((s, victims))
                if len(chosen) == t.replicas:
                    break
        if len(chosen) < t.replicas or not any(victims for _, victims in chosen):
            return None
        for s, victims in chosen:
            for r in victims:
                s.evict(r)
                self._rekey(s, r.resources, +1)
                self.preemptions.append(Preemption(r.task_id, t.task_id, s.address))
        return [s for s, _ in chosen]

    # ------------------------------------------------------------------ reasons

    def _explain(self, t: TaskView, taken: frozenset[str]) -> Unplaced:
        if not self.eligible:
            return filters.explain(t, self.providers, self.config, self.now,
                                   free={a: s.free() for a, s in self.slots.items()})
        return self.funnel.explain(t, taken)
