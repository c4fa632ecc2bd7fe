"""Why a task cannot be placed, counted with a few big-integer operations instead of a walk over providers.

A round explains every failure that no earlier one covers; the reference `filters.Explainer` walks the
providers for each (~90 ms at 10,000 providers). Here each provider is a bit: a filter value has a mask built
once per round, free capacity has threshold masks kept current as the round takes capacity, and distinct
operators are counted with one addition (an operator's providers are adjacent bits under a guard bit).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Iterator, Sequence

from marketplace.matching import filters
from marketplace.matching.models import MatchConfig, ProviderView, Resources, TaskView, Unplaced

Free = tuple[float, int, int, int]  # what a provider has free now: cpus, memory_mb, disk_mb, gpus
_CHECKPOINTS = 4096  # prefix masks kept for the price index at most (memory: this × providers / 8 bytes)
_Column = tuple[list[float], list[int], list[float], dict[float, int]]
_UNCAPPED = float("inf")  # the per-task cap of a provider whose policy sets none
_OFFSETS = tuple(tuple(i for i in range(8) if byte >> i & 1) for byte in range(256))


class Funnel:
    """The reference explanation, same result, for a round whose providers' free capacity changes.

    `providers` passed the provider-level filters (`steps` counted them) and are indexed by rank;
    `free_of(rank)` reads a provider's free capacity now; call `moved` whenever it changes.
    """

    __slots__ = ("providers", "config", "steps", "free_of", "free_column", "bit", "at", "all", "guards",
                 "blocks", "by_address", "checkpoints", "_masks", "_columns", "_thresholds", "_prices",
                 "_by_image", "_classes")

    def __init__(self, providers: Sequence[ProviderView], config: MatchConfig,
                 steps: tuple[tuple[str, int], ...], free_of: Callable[[int], Free],
                 checkpoints: int = _CHECKPOINTS,
                 free_column: Callable[[int], list[float]] | None = None) -> None:
        self.providers = providers
        self.config = config
        self.steps = steps
        self.free_of = free_of
        self.free_column = free_column  # optional: one free dimension of every provider by rank, read at once
        self.checkpoints = checkpoints  # most prefix masks the price index keeps
        self.bit: list[int] = [0] * len(providers)  # rank -> bit
        self.at: dict[int, int] = {}  # bit -> rank
        self.blocks: dict[str, int] = {}  # operator -> the mask of its providers
        pos, guards = 0, 0
        for rank in sorted(range(len(providers)), key=lambda r: (providers[r].operator, r)):
            operator = providers[rank].operator
            if operator not in self.blocks and pos:
                guards |= 1 << pos  # closes the previous operator's block
                pos += 1
            self.bit[rank] = pos
            self.at[pos] = rank
            self.blocks[operator] = self.blocks.get(operator, 0) | 1 << pos
            pos += 1
        guards |= 1 << pos
        self.guards = guards
        self.all = ((1 << pos) - 1) & ~guards
        self.by_address = {p.address: rank for rank, p in enumerate(providers)}
        self._masks: dict[tuple[object, ...], int] = {}
        # per (attribute, dimension): its values negated and bits, largest value first; values asked; masks
        self._columns: dict[tuple[object, ...], _Column] = {}
        # per free dimension: the thresholds asked so far (sorted) and, for each, who has at least that much
        self._thresholds: tuple[tuple[list[float], dict[float, int]], ...] = tuple(([], {}) for _ in range(4))
        self._by_image: dict[str, list[int]] | None = None
        self._prices: list[tuple[int, int, list[int], list[int], list[int], int]] | None = None
        self._classes: dict[tuple[str, bool], list[str]] | None = None

    # ------------------------------------------------------------------ bits

    def _mask(self, key: tuple[object, ...], pred: Callable[[ProviderView], bool]) -> int:
        """The providers for which `pred` holds, built once per `key`."""
        known = self._masks.get(key)
        if known is None:
            known = self._masks[key] = self._build(pred)
        return known

    def _build(self, pred: Callable[[ProviderView], bool]) -> int:
        return self._bits(b for b, p in zip(self.bit, self.providers, strict=True) if pred(p))

    def _bits(self, bits: Iterable[int]) -> int:
        """The mask of `bits`, set a byte at a time (an OR of big integers per bit would be quadratic)."""
        out = bytearray(self.all.bit_length() // 8 + 1)
        for b in bits:
            out[b >> 3] |= 1 << (b & 7)
        return int.from_bytes(out, "little")

    def _at_least(self, key: tuple[object, ...], column: Callable[[], list[float]], value: float) -> int:
        """The providers whose entry in `column` (a value per rank, read once per `key`) is at least `value`.

        Built from the mask of the nearest larger value already asked, adding the providers in between, so
        that a column's masks together cost one pass over its providers rather than one pass each.
        """
        known = self._masks.get((key, value))
        if known is not None:
            return known
        col = self._columns.get(key)
        if col is None:
            bits = self.bit
            pairs = sorted(((v, bits[rank]) for rank, v in enumerate(column())), key=lambda x: -x[0])
            col = self._columns[key] = ([-v for v, _ in pairs], [b for _, b in pairs], [], {})
        neg_values, ordered, asked, masks = col
        end = bisect_right(neg_values, -value)  # providers with at least `value`: a prefix
        j = bisect_right(asked, -value)  # the nearest larger value asked so far, if any
        if j:
            start = bisect_right(neg_values, asked[j - 1])
            mask = masks[asked[j - 1]] | self._bits(ordered[start:end])
        else:
            mask = self._bits(ordered[:end])
        insort(asked, -value)
        masks[-value] = mask
        self._masks[(key, value)] = mask
        return mask

    def _ranks(self, mask: int) -> list[int]:
        """The providers of `mask`, by rank."""
        at = self.at
        out: list[int] = []
        for i, byte in enumerate(mask.to_bytes(mask.bit_length() // 8 + 1, "little")):
            if byte:
                out.extend(at[8 * i + o] for o in _OFFSETS[byte])
        out.sort()
        return out

    def operators(self, mask: int) -> int:
        """Distinct operators among `mask`: a block with any bit set carries into its guard bit."""
        return ((mask + self.all) & self.guards).bit_count()

    # ------------------------------------------------------------------ free capacity

    def at_least(self, dim: int, value: float) -> int:
        """Providers with at least `value` free in dimension `dim` (0 cpus, 1 memory, 2 disk, 3 gpus)."""
        values, masks = self._thresholds[dim]
        known = masks.get(value)
        if known is None:
            if self.free_column is not None:
                column = self.free_column(dim)
            else:
                column = [self.free_of(rank)[dim] for rank in range(len(self.bit))]
            known = masks[value] = self._bits(b for b, v in zip(self.bit, column, strict=True) if v >= value)
            insort(values, value)
        return known

    def moved(self, rank: int, old: Free, new: Free) -> None:
        """Provider `rank`'s free capacity went from `old` to `new`: flip it in the thresholds between."""
        bit = 1 << self.bit[rank]
        for dim in range(4):
            a, b = old[dim], new[dim]
            if a == b:
                continue
            values, masks = self._thresholds[dim]
            if not values:
                continue
            lo, hi = (a, b) if a < b else (b, a)
            for value in values[bisect_right(values, lo):bisect_right(values, hi)]:
                masks[value] ^= bit

    # ------------------------------------------------------------------ price

    def _within_budget(self, t: TaskView, survivors: int) -> int:
        """Survivors whose ask for `t` is within its budget."""
        need, budget, timeout = t.resources, t.budget, t.timeout_s
        groups = None if need.gpus else self._price_groups()  # GPU providers are few: ask each
        if groups is None:
            providers, bit = self.providers, self.bit
            out = bytearray(self.all.bit_length() // 8 + 1)
            for rank in self._ranks(survivors):
                if providers[rank].prices.ask(need, timeout) <= budget:
                    b = bit[rank]
                    out[b >> 3] |= 1 << (b & 7)
            return int.from_bytes(out, "little")
        cpus, mem = need.cpus, need.memory_mb
        within = 0
        for per_cpu, per_gb, bases, bits, prefix, stride in groups:
            # ask = base + timeout × rate, the same arithmetic as Prices.ask for a replica without GPUs
            j = bisect_right(bases, budget - timeout * (int(cpus * per_cpu) + mem * per_gb // 1024))
            if j:
                q = j // stride
                if q:
                    within |= prefix[q - 1]
                for b in bits[q * stride:j]:
                    within |= 1 << b
        return within

    def _price_groups(self) -> list[tuple[int, int, list[int], list[int], list[int], int]] | None:
        """Providers grouped by (per-cpu, per-GB) price, each sorted by base price with prefix masks: for a
        task without GPUs, a group's members within budget are a prefix. None if groups would be too small."""
        if self._prices is None:
            groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
            for rank, p in enumerate(self.providers):
                pr = p.prices
                groups.setdefault((pr.per_cpu_second, pr.per_gb_second), []).append((pr.base, self.bit[rank]))
            if len(groups) * 8 > len(self.providers) + 64:
                self._prices = []
                return None
            stride = -(-len(self.providers) // self.checkpoints) or 1
            built = []
            for (per_cpu, per_gb), members in sorted(groups.items()):
                members.sort()
                bits = [b for _, b in members]
                prefix, acc = [], 0
                for i, b in enumerate(bits):
                    acc |= 1 << b
                    if (i + 1) % stride == 0:
                        prefix.append(acc)
                built.append((per_cpu, per_gb, [base for base, _ in members], bits, prefix, stride))
            self._prices = built
        return self._prices or None

    # ------------------------------------------------------------------ the funnel

    def _static(self, t: TaskView) -> Iterator[tuple[str, int]]:
        """Each task filter but the budget, in `filters.TASK_FILTERS` order, as a mask of who passes it."""
        need, all_ = t.resources, self.all
        mask = self._mask
        gpu = need.gpus > 0
        yield "runtime", mask(("runtime", t.runtime, t.runtime_class, gpu),
                              lambda p: filters.runs_runtime(p, t))
        yield "arch", all_ if t.arch is None else mask(("arch", t.arch), lambda p: p.arch == t.arch)
        yield "gpu", self._total(3, need.gpus)
        yield "gpu_model", (all_ if not need.gpus else
                            mask(("gpu_model", t.gpu_model, t.min_gpu_memory_mb),
                                 lambda p: filters.has_gpu_model(p, t)))
        total = self._total
        yield "size", (total(0, need.cpus) & total(1, need.memory_mb) & total(2, need.disk_mb)
                       & total(3, need.gpus) & total(1, t.min_memory_mb))
        yield "network", mask(("network",), lambda p: p.allows_network) if t.network else all_
        yield "image", self._image(t.image_digest)
        cap = self._cap
        yield "policy_size", (cap(0, need.cpus) & cap(1, need.memory_mb) & cap(2, need.disk_mb)
                              & cap(3, need.gpus))
        assigned = 0
        for address in t.assigned:
            rank = self.by_address.get(address)
            if rank is not None:
                assigned |= 1 << self.bit[rank]
        yield "assigned", all_ & ~assigned

    def _image(self, digest: str) -> int:
        """Providers whose policy admits `digest`: the unrestricted ones, and the few that list it."""
        known = self._masks.get(("image", digest))
        if known is None:
            allowed = self._mask(("images",), lambda p: p.allowed_images is None)
            for rank in self._listing().get(digest, ()):
                allowed |= 1 << self.bit[rank]
            known = self._masks[("image", digest)] = allowed
        return known

    def _listing(self) -> dict[str, list[int]]:
        """Image -> the ranks of the providers whose allowed images list it (built once)."""
        if self._by_image is None:
            self._by_image = {}
            for rank, p in enumerate(self.providers):
                for digest in p.allowed_images or ():
                    self._by_image.setdefault(digest, []).append(rank)
        return self._by_image

    def _total(self, dim: int, value: float) -> int:
        return self._at_least(("total", dim), lambda: [_dims(p.total)[dim] for p in self.providers], value)

    def _cap(self, dim: int, value: float) -> int:
        return self._at_least(("cap", dim), lambda: [_UNCAPPED if (c := p.max_task) is None else _dims(c)[dim]
                                                     for p in self.providers], value)

    def _class_masks(self, t: TaskView) -> list[tuple[str, int]]:
        """The classes `t` could run in (only its recorded one, once it has one), each with its providers."""
        gpu = t.resources.gpus > 0
        if self._classes is None:
            self._classes = {}
            for p in self.providers:
                for c, runtime, for_gpu in filters.slot_classes(p):
                    known = self._classes.setdefault((runtime, for_gpu), [])
                    if c not in known:
                        known.append(c)
            for known in self._classes.values():
                known.sort()
        classes = self._classes.get((t.runtime, gpu), [])
        if t.runtime_class is not None:
            classes = [c for c in classes if c == t.runtime_class]
        out = []
        for c in classes:
            def member(p: ProviderView, c: str = c) -> bool:
                return c in filters.task_classes(p, t)
            out.append((c, self._mask(("class", c, gpu, t.runtime), member)))
        return out

    def explain(self, t: TaskView, operators_taken: frozenset[str] = frozenset()) -> Unplaced:
        """Why `t` cannot be placed now: `filters.Explainer.explain` on the current free capacity."""
        steps = list(self.steps)
        survivors = self.all
        for code, passing in self._static(t):
            kept = survivors & passing
            n = kept.bit_count()
            steps.append((code, n))
            if not n:
                before = [self.providers[rank] for rank in self._ranks(survivors)]
                return filters.to_unplaced(t, filters.filtered_out(code, t, before, self.config), steps)
            survivors = kept
        priced = survivors & self._within_budget(t, survivors)
        within = priced.bit_count()
        steps.append(("budget", within))
        if not within:
            lowest = min(self.providers[rank].prices.ask(t.resources, t.timeout_s)
                         for rank in self._ranks(survivors))
            return filters.to_unplaced(t, filters.budget_why(t, survivors.bit_count(), lowest), steps)
        usable = priced
        for operator in operators_taken:
            usable &= ~self.blocks.get(operator, 0)
        ops = self.operators(usable)
        steps.append(("operators", ops))
        matching = usable.bit_count()
        if ops < t.replicas:
            why = filters.operators_why(t, ops, matching, len(operators_taken))
            return filters.to_unplaced(t, why, steps)
        fits = [self.at_least(dim, value) for dim, value in enumerate(_dims(t.resources))]
        room = fits[0] & fits[1] & fits[2] & fits[3]
        groups = {c: m for c, m in ((c, usable & m) for c, m in self._class_masks(t)) if m}
        if len(groups) > 1:  # replicas must share a class: count each apart
            per_class = {c: self.operators(m) for c, m in groups.items()}
            steps.append(("class", max(per_class.values())))
            if max(per_class.values()) < t.replicas:
                return filters.to_unplaced(t, filters.class_why(t, per_class), steps)
            best = min((c for c in groups if per_class[c] >= t.replicas),
                       key=lambda c: (-self.operators(groups[c] & room), c))
            usable = groups[best]
            matching = usable.bit_count()
        free = usable & room
        steps.append(("free", free.bit_count()))
        free_ops = self.operators(free)
        if free_ops < t.replicas:
            short = {dim: matching - (usable & fit).bit_count()
                     for dim, fit in zip(filters.DIMENSIONS, fits, strict=True)}
            why = filters.busy_why(t, matching, free.bit_count(), short, free_ops)
            return filters.to_unplaced(t, why, steps)
        return Unplaced(t.task_id, "unknown", "no reason found: the task should be placeable", tuple(steps))


def _dims(r: Resources) -> Free:
    return (r.cpus, r.memory_mb, r.disk_mb, r.gpus)
