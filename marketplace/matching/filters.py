"""The matcher's filters, one small predicate each, and `explain`: why a task cannot be placed, counted.

The engine inlines the same checks in its hot loop; these are the reference the tests hold it to, and the
funnel that turns "no candidates" into a sentence a customer can act on.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from hashgrid.runtime_class import is_gpu_class, runtime_of
from marketplace.matching.models import (
    MatchConfig,
    ProviderView,
    Resources,
    TaskView,
    Unplaced,
    format_grid,
)

ProviderPredicate = Callable[[ProviderView, MatchConfig, float], bool]
TaskPredicate = Callable[[ProviderView, TaskView], bool]


# ------------------------------------------------------------ provider-level filters (same for every task)


def heartbeat_fresh(p: ProviderView, config: MatchConfig, now: float) -> bool:
    """Online: its last heartbeat is within the TTL."""
    return now - p.last_heartbeat <= config.heartbeat_ttl


def stake_enough(p: ProviderView, config: MatchConfig, now: float) -> bool:
    """Staked at or above the minimum, so a slash can cover a lie."""
    return p.stake >= config.min_stake


def reputation_enough(p: ProviderView, config: MatchConfig, now: float) -> bool:
    """Reputation at or above the floor."""
    return p.reputation >= config.reputation_floor


PROVIDER_FILTERS: tuple[tuple[str, ProviderPredicate], ...] = (
    ("heartbeat", heartbeat_fresh),
    ("stake", stake_enough),
    ("reputation", reputation_enough),
)


# ------------------------------------------------------------ task-level filters (capability, policy, price)


def slot_classes(p: ProviderView) -> list[tuple[str, str, bool]]:
    """(class, runtime, for GPU work) of each class `p` runs; one that names no class stands for a class per
    runtime, for CPU and GPU work alike."""
    if not p.classes:
        return [(r, r, gpu) for r in sorted(p.runtimes) for gpu in (False, True)]
    return [(c, r, is_gpu_class(c)) for c in sorted(p.classes) if (r := runtime_of(c)) in p.runtimes]


def task_classes(p: ProviderView, t: TaskView) -> tuple[str, ...]:
    """The classes in which `p` could run `t`: of its runtime, for GPU work exactly when `t` needs GPUs."""
    if t.runtime not in p.runtimes:
        return ()
    if not p.classes:
        return (t.runtime,)
    gpu = t.resources.gpus > 0
    return tuple(c for c in sorted(p.classes) if runtime_of(c) == t.runtime and is_gpu_class(c) == gpu)


def runs_runtime(p: ProviderView, t: TaskView) -> bool:
    """Runs the task's runtime in some class (in its recorded class, once it has one)."""
    classes = task_classes(p, t)
    return bool(classes) and (t.runtime_class is None or t.runtime_class in classes)


def has_arch(p: ProviderView, t: TaskView) -> bool:
    return t.arch is None or p.arch == t.arch


def has_gpus(p: ProviderView, t: TaskView) -> bool:
    return p.total.gpus >= t.resources.gpus


def has_gpu_model(p: ProviderView, t: TaskView) -> bool:
    if t.resources.gpus == 0:
        return True
    return (t.gpu_model is None or p.gpu_model == t.gpu_model) and p.gpu_memory_mb >= t.min_gpu_memory_mb


def large_enough(p: ProviderView, t: TaskView) -> bool:
    """Its total capacity could ever hold one replica, and it meets the task's "high memory" requirement."""
    return t.resources.fits_in(p.total) and p.total.memory_mb >= t.min_memory_mb


def policy_network(p: ProviderView, t: TaskView) -> bool:
    return not t.network or p.allows_network


def policy_image(p: ProviderView, t: TaskView) -> bool:
    return p.allowed_images is None or t.image_digest in p.allowed_images


def policy_size(p: ProviderView, t: TaskView) -> bool:
    return p.max_task is None or t.resources.fits_in(p.max_task)


def not_assigned(p: ProviderView, t: TaskView) -> bool:
    return p.address not in t.assigned


def ask_within_budget(p: ProviderView, t: TaskView) -> bool:
    return p.prices.ask(t.resources, t.timeout_s) <= t.budget


TASK_FILTERS: tuple[tuple[str, TaskPredicate], ...] = (
    ("runtime", runs_runtime),
    ("arch", has_arch),
    ("gpu", has_gpus),
    ("gpu_model", has_gpu_model),
    ("size", large_enough),
    ("network", policy_network),
    ("image", policy_image),
    ("policy_size", policy_size),
    ("assigned", not_assigned),
    ("budget", ask_within_budget),
)


def fits_free(t: TaskView, free: Resources) -> bool:
    """One replica fits in what the provider has free now."""
    return t.resources.fits_in(free)


def passes(p: ProviderView, t: TaskView, config: MatchConfig, now: float,
           free: Resources | None = None) -> bool:
    """Whether `p` may take one replica of `t`: every filter, free resources too (`free` overrides p.free)."""
    return (all(pred(p, config, now) for _, pred in PROVIDER_FILTERS)
            and all(pred(p, t) for _, pred in TASK_FILTERS)
            and fits_free(t, p.free if free is None else free))


# ---------------------------------------------------------------- explain


@dataclass(frozen=True, slots=True)
class Why:
    code: str
    reason: str
    details: Mapping[str, int | float | str]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _operators(providers: Iterable[ProviderView]) -> int:
    return len({p.operator for p in providers})


def filtered_out(code: str, t: TaskView, before: Sequence[ProviderView], config: MatchConfig) -> Why:
    """The sentence for "filter `code` left no provider", given the providers that reached it."""
    n = len(before)
    need = t.resources
    if code == "heartbeat":
        return Why(code, f"all {_plural(n, 'provider')} have a stale heartbeat "
                          f"(none within {config.heartbeat_ttl:g} s)", {"stale": n})
    if code == "stake":
        top = max(p.stake for p in before)
        return Why(code, f"all {n} online providers stake below the minimum {format_grid(config.min_stake)} "
                          f"(highest stake {format_grid(top)})", {"below_stake": n, "highest_stake": top})
    if code == "reputation":
        best = max(p.reputation for p in before)
        return Why(code, f"all {n} online staked providers have reputation below the floor "
                          f"{config.reputation_floor:g} (best {best:.2f})", {"below_floor": n})
    if code == "runtime":
        where = f" in class {t.runtime_class}, where its replicas run" if t.runtime_class else ""
        runs_it = sum(1 for p in before if t.runtime in p.runtimes)
        if need.gpus and runs_it and not t.runtime_class:
            # they run the runtime, but in no GPU class: the missing thing is the GPU, say so
            return Why(code, f"no provider offers a GPU for runtime {t.runtime} ({runs_it} of {n} online "
                              f"providers run {t.runtime}, none with an attachable GPU)", {"checked": n})
        return Why(code, f"no provider supports runtime {t.runtime}{where} ({n} online providers checked)",
                    {"checked": n})
    if code == "arch":
        arches = ", ".join(sorted({p.arch for p in before}))
        return Why(code, f"no provider with runtime {t.runtime} has arch {t.arch} "
                          f"({n} providers have {arches})", {"checked": n})
    if code == "gpu":
        most = max(p.total.gpus for p in before)
        if most == 0:
            return Why(code, "no provider offers a GPU", {"checked": n})
        return Why(code, f"no provider offers {need.gpus} GPUs (most on one provider: {most})",
                    {"checked": n, "most_gpus": most})
    if code == "gpu_model":
        models = ", ".join(sorted({p.gpu_model or "unknown" for p in before}))
        want = t.gpu_model or "any model"
        mem = f" with {t.min_gpu_memory_mb} MB of GPU memory" if t.min_gpu_memory_mb else ""
        return Why(code, f"no provider offers a GPU of {want}{mem} ({n} GPU providers offer {models})",
                    {"checked": n})
    if code == "size":
        short = []
        for dim, have in (("cpus", max(p.total.cpus for p in before)),
                          ("memory_mb", max(p.total.memory_mb for p in before)),
                          ("disk_mb", max(p.total.disk_mb for p in before)),
                          ("gpus", max(p.total.gpus for p in before))):
            if getattr(need, dim) > have:
                short.append(f"needs {getattr(need, dim):g} {dim}, the largest has {have:g}")
        if t.min_memory_mb > max(p.total.memory_mb for p in before):
            short.append(f"needs a provider with {t.min_memory_mb} MB memory")
        detail = "; ".join(short) or "no single provider has every dimension at once"
        return Why(code, f"no provider is large enough ({detail})", {"checked": n})
    if code == "network":
        return Why(code, f"{_plural(n, 'provider')} match but their policy refuses network access",
                    {"refuse_network": n})
    if code == "image":
        return Why(code, f"{_plural(n, 'provider')} match but their policy does not allow image "
                          f"{t.image_digest[:19]}", {"refuse_image": n})
    if code == "policy_size":
        return Why(code, f"{_plural(n, 'provider')} match but their policy caps a replica below its needs",
                    {"refuse_size": n})
    if code == "assigned":
        return Why(code, f"all {_plural(n, 'matching provider')} already run a replica of it",
                    {"already_assigned": n})
    raise ValueError(f"no reason text for filter {code!r}")  # pragma: no cover - every filter has one


def _busy(t: TaskView, matching: Sequence[ProviderView],
          free_of: Callable[[ProviderView], Resources]) -> Why:
    """The sentence for "providers match but not enough of them have room now"."""
    need = t.resources
    free = [p for p in matching if fits_free(t, free_of(p))]
    short = {dim: sum(1 for p in matching if getattr(need, dim) > getattr(free_of(p), dim))
             for dim in DIMENSIONS}
    return busy_why(t, len(matching), len(free), short, _operators(free))


DIMENSIONS = ("cpus", "memory_mb", "disk_mb", "gpus")


def busy_why(t: TaskView, matching: int, free: int, short: Mapping[str, int], free_operators: int) -> Why:
    """"busy" from its counts: `short` says, dimension by dimension, how many matching providers lack it."""
    k = t.replicas
    details: dict[str, int | float | str] = {"matching": matching, "free": free}
    details.update({f"short_{dim}": short[dim] for dim in DIMENSIONS if short[dim]})
    if not free:
        return Why("busy", f"all {_plural(matching, 'matching provider')} are busy", details)
    details["free_operators"] = free_operators
    return Why("busy", f"only {free} of {matching} matching providers have room now "
                        f"({_plural(free_operators, 'distinct operator')}); {_plural(k, 'replica')} needed",
                details)


def budget_why(t: TaskView, matching: int, lowest_ask: int) -> Why:
    """"budget": `matching` providers pass every other filter, the cheapest asks `lowest_ask`."""
    return Why("budget", f"{_plural(matching, 'provider')} match but all asks exceed the budget "
                          f"(lowest ask {format_grid(lowest_ask)} > {format_grid(t.budget)})",
                {"over_budget": matching, "lowest_ask": lowest_ask, "budget": t.budget})


def operators_why(t: TaskView, operators: int, matching: int, operators_taken: int) -> Why:
    """"operators": fewer distinct operators than replicas among `matching` providers within budget."""
    taken = (f" besides the {_plural(operators_taken, 'operator')} already running it"
             if operators_taken else "")
    return Why("operators", f"only {_plural(operators, 'distinct operator')} can run it{taken}; "
                             f"{_plural(t.replicas, 'replica')} needed",
                {"operators": operators, "replicas": t.replicas, "matching": matching})


def class_why(t: TaskView, per_class: Mapping[str, int]) -> Why:
    """"class": enough operators in all, but no one runtime class has k of them."""
    counts = ", ".join(f"{c}: {n}" for c, n in sorted(per_class.items()))
    return Why("class", f"no runtime class has {_plural(t.replicas, 'distinct operator')} for its replicas "
                         f"({counts}); replicas of one task run in one class so that honest results agree",
                {"classes": len(per_class), "best_class_operators": max(per_class.values(), default=0),
                 "replicas": t.replicas})


class Explainer:
    """`explain` for many tasks of one round: the static part of the funnel (everything before the budget) is
    computed once per task shape, and providers that pass it are kept sorted by ask, so the budget step is a
    bisection and only the operators and free-capacity steps are counted per task.
    """

    __slots__ = ("providers", "config", "steps", "_static")

    def __init__(self, providers: Sequence[ProviderView], config: MatchConfig,
                 steps: tuple[tuple[str, int], ...] = ()) -> None:
        self.providers = providers  # already through the provider-level filters
        self.config = config
        self.steps = steps
        self._static: dict[tuple[object, ...], Unplaced | tuple[tuple[tuple[str, int], ...],
                                                                 list[ProviderView], list[int]]] = {}

    def _static_part(self, t: TaskView) -> Unplaced | tuple[tuple[tuple[str, int], ...],
                                                            list[ProviderView], list[int]]:
        key = (t.runtime, t.runtime_class, t.arch, t.resources, t.gpu_model, t.min_gpu_memory_mb,
               t.min_memory_mb, t.network,
               t.image_digest, t.timeout_s, t.assigned)
        known = self._static.get(key)
        if known is not None:
            return known
        survivors: Sequence[ProviderView] = self.providers
        steps = list(self.steps)
        result: Unplaced | tuple[tuple[tuple[str, int], ...], list[ProviderView], list[int]] | None = None
        for code, pred in TASK_FILTERS[:-1]:  # the last one, budget, is per task
            kept = [p for p in survivors if pred(p, t)]
            steps.append((code, len(kept)))
            if not kept:
                result = to_unplaced(t, filtered_out(code, t, survivors, self.config), steps)
                break
            survivors = kept
        if result is None:
            priced = sorted((p.prices.ask(t.resources, t.timeout_s), p.address, p) for p in survivors)
            result = (tuple(steps), [p for _, _, p in priced], [ask for ask, _, _ in priced])
        self._static[key] = result
        return result

    def explain(self, t: TaskView, free_of: Callable[[ProviderView], Resources],
                operators_taken: frozenset[str] = frozenset()) -> Unplaced:
        """Why `t` cannot be placed now, given each provider's free resources from `free_of`."""
        static = self._static_part(t)
        if isinstance(static, Unplaced):
            return Unplaced(t.task_id, static.code, static.reason, static.funnel, static.details)
        funnel, by_ask, asks = static
        steps = list(funnel)
        within = bisect_right(asks, t.budget)
        steps.append(("budget", within))
        if within == 0:
            return to_unplaced(t, budget_why(t, len(asks), asks[0]), steps)
        usable = [p for p in by_ask[:within] if p.operator not in operators_taken]
        ops = _operators(usable)
        steps.append(("operators", ops))
        if ops < t.replicas:
            return to_unplaced(t, operators_why(t, ops, len(usable), len(operators_taken)), steps)
        groups = _by_class(t, usable)
        if len(groups) > 1:  # replicas must share a class: count each apart
            per_class = {c: _operators(ps) for c, ps in groups.items()}
            steps.append(("class", max(per_class.values())))
            if max(per_class.values()) < t.replicas:
                return to_unplaced(t, class_why(t, per_class), steps)
            best = min((c for c in groups if per_class[c] >= t.replicas),
                       key=lambda c: (-_operators(p for p in groups[c] if fits_free(t, free_of(p))), c))
            usable = groups[best]
        free = [p for p in usable if fits_free(t, free_of(p))]
        steps.append(("free", len(free)))
        if _operators(free) < t.replicas:
            return to_unplaced(t, _busy(t, usable, free_of), steps)
        return Unplaced(t.task_id, "unknown", "no reason found: the task should be placeable", tuple(steps))


def _by_class(t: TaskView, providers: Iterable[ProviderView]) -> dict[str, list[ProviderView]]:
    """Providers grouped by the classes they could run `t` in (one provider may be in several)."""
    groups: dict[str, list[ProviderView]] = {}
    for p in providers:
        for c in task_classes(p, t):
            if t.runtime_class is None or c == t.runtime_class:
                groups.setdefault(c, []).append(p)
    return groups


def to_unplaced(t: TaskView, why: Why, steps: list[tuple[str, int]]) -> Unplaced:
    return Unplaced(t.task_id, why.code, why.reason, tuple(steps), MappingProxyType(dict(why.details)))


def explain(t: TaskView, providers: Sequence[ProviderView], config: MatchConfig, now: float, *,
            free: Mapping[str, Resources] | None = None) -> Unplaced:
    """Why `t` cannot be placed on `providers`: the first filter that leaves none (or too few operators).

    `free` overrides providers' free resources by address (the engine's state part-way through a round).
    """
    survivors: Sequence[ProviderView] = providers
    steps: list[tuple[str, int]] = [("providers", len(providers))]
    if not providers:
        return Unplaced(t.task_id, "no_providers", "no provider is registered", tuple(steps))
    for code, pred in PROVIDER_FILTERS:
        kept = [p for p in survivors if pred(p, config, now)]
        steps.append((code, len(kept)))
        if not kept:
            return to_unplaced(t, filtered_out(code, t, survivors, config), steps)
        survivors = kept
    by_address = {p.address: p for p in providers}
    taken = frozenset(by_address[a].operator for a in t.assigned if a in by_address)

    def free_of(p: ProviderView) -> Resources:
        return p.free if free is None else free.get(p.address, p.free)

    return Explainer(survivors, config, tuple(steps)).explain(t, free_of, taken)
