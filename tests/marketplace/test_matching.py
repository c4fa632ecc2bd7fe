"""The matching engine: each filter and its reason, distinctness, strategies, fairness, preemption, and a
property test that every assignment respects capacity, distinctness, budget and filters."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.matching import (
    MatchConfig,
    Prices,
    ProviderView,
    Resources,
    RunningReplica,
    TaskView,
    explain,
    filters,
    match,
    passes,
)
from marketplace.matching.failures import Failures, covers
from marketplace.matching.funnel import Funnel
from marketplace.matching.models import WEI_PER_GRID

NOW = 1_000_000.0
GRID = WEI_PER_GRID
CFG = MatchConfig()


def provider(address: str, *, operator: str | None = None, cpus: float = 8, mem: int = 16_384, gpus: int = 0,
             free_cpus: float | None = None, ask: int = GRID, **kw: object) -> ProviderView:
    total = Resources(cpus, mem, 100_000, gpus)
    free = Resources(cpus if free_cpus is None else free_cpus, mem, 100_000, gpus)
    fields: dict[str, object] = dict(
        address=address, operator=operator or f"op-{address}", runtimes=frozenset({"docker", "wasm"}),
        arch="x86_64", total=total, free=free, prices=Prices(base=ask), stake=100 * GRID, reputation=0.9,
        last_heartbeat=NOW - 1)
    fields.update(kw)
    return ProviderView(**fields)  # type: ignore[arg-type]


def task(task_id: str, *, cpus: float = 1, mem: int = 512, gpus: int = 0, replicas: int = 1,
         budget: int = 10 * GRID, customer: str = "alice", **kw: object) -> TaskView:
    fields: dict[str, object] = dict(
        task_id=task_id, customer=customer, runtime="docker", image_digest="sha256:" + "a" * 64,
        resources=Resources(cpus, mem, 100, gpus), budget=budget, replicas=replicas)
    fields.update(kw)
    return TaskView(**fields)  # type: ignore[arg-type]


def one_unplaced(providers: list[ProviderView], t: TaskView, config: MatchConfig = CFG):
    result = match(providers, [t], config, NOW)
    assert not result.assignments, result
    (u,) = result.unplaced
    # the engine's reason is the reference explain()'s reason
    assert u.reason == explain(t, providers, config, NOW).reason
    return u


# ---------------------------------------------------------------- filters and their reasons


def test_no_provider_offers_a_gpu() -> None:
    u = one_unplaced([provider("0x1"), provider("0x2")], task("t", gpus=1))
    assert (u.code, u.reason) == ("gpu", "no provider offers a GPU")


def test_gpu_routing_to_declared_gpu_provider_and_model() -> None:
    cpu, t4, a100 = (provider("0x1"), provider("0x2", gpus=1, gpu_model="T4"),
                     provider("0x3", gpus=2, gpu_model="A100"))
    result = match([cpu, t4, a100], [task("g", gpus=1, gpu_model="A100"), task("c")], CFG, NOW)
    placed = {a.task_id: a.providers for a in result.assignments}
    assert placed["g"] == ("0x3",)
    assert placed["c"] == ("0x1",)  # best fit keeps GPU providers for GPU tasks
    u = one_unplaced([cpu, t4], task("h", gpus=1, gpu_model="H100"))
    assert u.code == "gpu_model" and "H100" in u.reason and "T4" in u.reason


def test_budget_reason_names_lowest_ask() -> None:
    ps = [provider("0x1", ask=12 * GRID), provider("0x2", ask=15 * GRID), provider("0x3", ask=20 * GRID)]
    u = one_unplaced(ps, task("t", budget=10 * GRID))
    assert u.reason == "3 providers match but all asks exceed the budget (lowest ask 12 GRID > 10 GRID)"
    assert u.details["lowest_ask"] == 12 * GRID


def test_all_busy() -> None:
    ps = [provider(f"0x{i}", free_cpus=0.5) for i in range(5)]
    u = one_unplaced(ps, task("t", cpus=1))
    assert (u.code, u.reason) == ("busy", "all 5 matching providers are busy")
    assert u.details["short_cpus"] == 5


def test_too_few_operators() -> None:
    ps = [provider("0x1", operator="a"), provider("0x2", operator="a"), provider("0x3", operator="b")]
    u = one_unplaced(ps, task("t", replicas=3))
    assert u.reason == "only 2 distinct operators can run it; 3 replicas needed"


def test_runtime_arch_size() -> None:
    ps = [provider("0x1", runtimes=frozenset({"docker"}))]
    assert one_unplaced(ps, task("t", runtime="wasm")).reason.startswith("no provider supports runtime wasm")
    u = one_unplaced(ps, task("t", arch="aarch64"))
    assert u.code == "arch" and "aarch64" in u.reason
    u = one_unplaced(ps, task("t", cpus=64))
    assert u.code == "size" and "needs 64 cpus, the largest has 8" in u.reason


def test_stale_heartbeat_stake_reputation() -> None:
    stale = provider("0x1", last_heartbeat=NOW - 100)
    assert one_unplaced([stale], task("t")).code == "heartbeat"
    poor = provider("0x1", stake=GRID)
    u = one_unplaced([poor], task("t"), MatchConfig(min_stake=10 * GRID))
    assert u.code == "stake" and "10 GRID" in u.reason
    bad = provider("0x1", reputation=0.1)
    u = one_unplaced([bad], task("t"), MatchConfig(reputation_floor=0.5))
    assert u.code == "reputation" and "0.5" in u.reason


def test_policy_refuses_network_image_size() -> None:
    u = one_unplaced([provider("0x1", allows_network=False)], task("t", network=True))
    assert u.reason == "1 provider match but their policy refuses network access" or u.code == "network"
    u = one_unplaced([provider("0x1", allowed_images=frozenset({"sha256:" + "b" * 64}))], task("t"))
    assert u.code == "image"
    u = one_unplaced([provider("0x1", max_task=Resources(1, 1024, 1000, 0))], task("t", cpus=2))
    assert u.code == "policy_size"
    ok = match([provider("0x1", allows_network=True)], [task("t", network=True)], CFG, NOW)
    assert ok.assignments[0].providers == ("0x1",)


def test_already_assigned_providers_and_their_operators_are_excluded() -> None:
    ps = [provider("0x1", operator="a"), provider("0x2", operator="a"), provider("0x3", operator="b")]
    result = match(ps, [task("t", assigned=frozenset({"0x1"}))], CFG, NOW)
    assert result.assignments[0].providers == ("0x3",)
    u = one_unplaced(ps, task("t", replicas=2, assigned=frozenset({"0x1"})))
    assert u.code == "operators"


# ---------------------------------------------------------------- placement behaviour


def test_distinct_providers_and_operators() -> None:
    ps = [provider(f"0x{i}", operator=f"op{i % 3}") for i in range(9)]
    (a,) = match(ps, [task("t", replicas=3)], CFG, NOW).assignments
    assert len(set(a.providers)) == 3
    assert len({next(p.operator for p in ps if p.address == x) for x in a.providers}) == 3


def test_best_fit_versus_spread() -> None:
    ps = [provider("0xbig", cpus=32), provider("0xsmall", cpus=4), provider("0xmid", cpus=8)]
    t = task("t", cpus=2)
    assert match(ps, [t], CFG, NOW).assignments[0].providers == ("0xsmall",)
    assert match(ps, [t], MatchConfig(strategy="spread"), NOW).assignments[0].providers == ("0xbig",)
    loaded = [provider("0xa", cpus=32, free_cpus=8), provider("0xb", cpus=8, free_cpus=6)]
    assert match(loaded, [t], MatchConfig(strategy="least_loaded"), NOW).assignments[0].providers == ("0xb",)


def test_free_resources_shrink_within_a_round() -> None:
    ps = [provider("0x1", cpus=4)]
    result = match(ps, [task(f"t{i}", cpus=2, submitted_at=i) for i in range(3)], CFG, NOW)
    assert [a.task_id for a in result.assignments] == ["t0", "t1"]
    assert result.unplaced[0].code == "busy"


def test_affinity_prefers_provider_holding_inputs() -> None:
    digest = "c" * 64
    ps = [provider("0x1"), provider("0x2", cached_digests=frozenset({digest}))]
    (a,) = match(ps, [task("t", input_digests=frozenset({digest}))], CFG, NOW).assignments
    assert a.providers == ("0x2",)


def test_fairness_interleaves_customers() -> None:
    ps = [provider("0x1", cpus=2)]
    tasks = [task(f"big{i}", customer="whale", submitted_at=i) for i in range(10)]
    tasks.append(task("small", customer="minnow", submitted_at=100))
    placed = {a.task_id for a in match(ps, tasks, CFG, NOW).assignments}
    assert placed == {"big0", "small"}
    fifo = {a.task_id for a in match(ps, tasks, MatchConfig(fairness="fifo"), NOW).assignments}
    assert fifo == {"big0", "big1"}


def test_priority_goes_first_and_preempts_lower() -> None:
    running = RunningReplica("old", priority=0, resources=Resources(4, 8192, 100, 0))
    ps = [provider("0x1", cpus=4, free_cpus=0, running=(running,))]
    urgent = task("urgent", cpus=2, priority=5)
    result = match(ps, [task("low", cpus=1), urgent], CFG, NOW)
    assert [a.task_id for a in result.assignments] == ["urgent", "low"]  # priority first
    assert [(p.task_id, p.by, p.provider) for p in result.preemptions] == [("old", "urgent", "0x1")]
    assert {u.task_id for u in result.unplaced} == set()  # the 2 cpus left after eviction fit "low"
    off = match(ps, [urgent], MatchConfig(preemption=False), NOW)
    assert not off.preemptions and off.unplaced[0].code == "busy"
    equal = match(ps, [task("same", priority=0)], CFG, NOW)
    assert not equal.preemptions


def test_a_failure_covers_richer_tasks_up_to_the_ask_that_would_place_them() -> None:
    cheap_full = provider("0xb", cpus=4, free_cpus=0, ask=GRID)
    dear_free = provider("0xa", cpus=4, ask=5 * GRID)
    first = task("first", cpus=2, budget=2 * GRID, submitted_at=0)
    richer = task("richer", cpus=2, budget=4 * GRID, submitted_at=1)
    rich_enough = task("enough", cpus=2, budget=5 * GRID, submitted_at=2)
    result = match([cheap_full, dear_free], [first, richer, rich_enough], CFG, NOW)
    reasons = {u.task_id: u for u in result.unplaced}
    assert reasons["first"].code == "busy"
    # 4 GRID is under the lowest ask with room (5 GRID): "richer" fails without a scan of its own
    assert reasons["richer"].code == "busy" and reasons["richer"].details["as_for"] == "first"
    assert [(a.task_id, a.providers) for a in result.assignments] == [("enough", ("0xa",))]


def test_a_remembered_failure_does_not_hide_a_preemption_a_richer_task_can_afford() -> None:
    cheap_full = provider("0xb", cpus=4, free_cpus=0, ask=GRID)
    low = RunningReplica("old", priority=0, resources=Resources(4, 1024, 100, 0))
    dear_busy = provider("0xa", cpus=4, free_cpus=0, ask=5 * GRID, running=(low,))
    poor = task("poor", cpus=2, priority=1, budget=2 * GRID, submitted_at=0)
    rich = task("rich", cpus=2, priority=1, budget=10 * GRID, submitted_at=1)
    result = match([cheap_full, dear_busy], [poor, rich], CFG, NOW)
    assert [u.task_id for u in result.unplaced] == ["poor"]
    assert [(a.task_id, a.providers) for a in result.assignments] == [("rich", ("0xa",))]
    assert [(p.task_id, p.by) for p in result.preemptions] == [("old", "rich")]


def test_deterministic() -> None:
    ps = [provider(f"0x{i:02x}", operator=f"op{i % 4}", cpus=4 + i % 3) for i in range(20)]
    ts = [task(f"t{i}", cpus=1 + i % 3, replicas=1 + i % 2, customer=f"c{i % 3}") for i in range(40)]
    first = match(ps, ts, CFG, NOW)
    assert match(list(reversed(ps)), list(reversed(ts)), CFG, NOW) == first


# ---------------------------------------------------------------- property: every decision is sound

addresses = [f"0x{i:02x}" for i in range(12)]


@st.composite
def providers_st(draw: st.DrawFn) -> list[ProviderView]:
    out = []
    for address in draw(st.lists(st.sampled_from(addresses), min_size=0, max_size=12, unique=True)):
        cpus = draw(st.sampled_from([1.0, 2.0, 4.0, 8.0]))
        mem = draw(st.sampled_from([1024, 4096, 8192]))
        gpus = draw(st.sampled_from([0, 0, 1, 2]))
        used = draw(st.sampled_from([0.0, 0.5, 1.0]))
        running = tuple(RunningReplica(f"r-{address}-{j}", draw(st.integers(0, 2)),
                                       Resources(1.0, 256, 10, 0))
                        for j in range(draw(st.integers(0, 2))))
        out.append(ProviderView(
            address=address, operator=draw(st.sampled_from(["a", "b", "c", "d"])),
            runtimes=draw(st.sampled_from([frozenset({"docker"}), frozenset({"wasm"}),
                                           frozenset({"docker", "wasm"})])),
            arch=draw(st.sampled_from(["x86_64", "aarch64"])),
            total=Resources(cpus, mem, 1000, gpus),
            free=Resources(cpus * (1 - used), int(mem * (1 - used)), 1000, gpus),
            prices=Prices(base=draw(st.integers(0, 5)) * GRID, per_cpu_second=draw(st.integers(0, 3))),
            stake=draw(st.integers(0, 3)) * GRID, reputation=draw(st.floats(0, 1)),
            last_heartbeat=NOW - draw(st.sampled_from([0, 10, 100])),
            gpu_model=draw(st.sampled_from(["T4", "A100"])) if gpus else None,
            allows_network=draw(st.booleans()),
            max_task=draw(st.sampled_from([None, Resources(2.0, 4096, 1000, 1)])),
            allowed_images=draw(st.sampled_from([None, frozenset({"img1"})])),
            cached_digests=frozenset(draw(st.lists(st.sampled_from(["d1", "d2"]), max_size=2))),
            running=running,
        ))
    return out


@st.composite
def tasks_st(draw: st.DrawFn) -> list[TaskView]:
    out = []
    for i in range(draw(st.integers(0, 25))):
        gpus = draw(st.sampled_from([0, 0, 0, 1]))
        out.append(TaskView(
            task_id=f"t{i}", customer=draw(st.sampled_from(["x", "y", "z"])),
            runtime=draw(st.sampled_from(["docker", "wasm"])),
            image_digest=draw(st.sampled_from(["img1", "img2"])),
            resources=Resources(draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
                                draw(st.sampled_from([256, 1024, 4096])), 10, gpus),
            budget=draw(st.integers(0, 6)) * GRID, replicas=draw(st.integers(1, 3)),
            timeout_s=draw(st.sampled_from([1, 60])), priority=draw(st.integers(0, 3)),
            submitted_at=draw(st.floats(0, 100)),
            arch=draw(st.sampled_from([None, "x86_64", "aarch64"])),
            gpu_model=draw(st.sampled_from([None, "T4"])) if gpus else None,
            network=draw(st.booleans()),
            input_digests=frozenset(draw(st.lists(st.sampled_from(["d1", "d2"]), max_size=2))),
            assigned=frozenset(draw(st.lists(st.sampled_from(addresses), max_size=2))),
        ))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(providers_st(), tasks_st(),
       st.builds(MatchConfig, strategy=st.sampled_from(["best_fit", "spread", "least_loaded"]),
                 fairness=st.sampled_from(["round_robin", "deficit", "fifo"]),
                 min_stake=st.sampled_from([0, GRID]), reputation_floor=st.sampled_from([0.0, 0.5]),
                 preemption=st.booleans(), candidate_window=st.integers(1, 4)))
def test_every_decision_is_sound(providers: list[ProviderView], tasks: list[TaskView],
                                 config: MatchConfig) -> None:
    result = match(providers, tasks, config, NOW)
    by_address = {p.address: p for p in providers}
    assert sorted(a.task_id for a in result.assignments) + sorted(u.task_id for u in result.unplaced) \
        and Counter(a.task_id for a in result.assignments) + Counter(u.task_id for u in result.unplaced) \
        == Counter(t.task_id for t in tasks) or not tasks
    freed: dict[str, Resources] = defaultdict(Resources)
    for pre in result.preemptions:
        victim = next(r for r in by_address[pre.provider].running if r.task_id == pre.task_id)
        assert next(t for t in tasks if t.task_id == pre.by).priority > victim.priority
        f = freed[pre.provider]
        v = victim.resources
        freed[pre.provider] = Resources(f.cpus + v.cpus, f.memory_mb + v.memory_mb,
                                        f.disk_mb + v.disk_mb, f.gpus + v.gpus)
    used: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])
    tasks_by_id = {t.task_id: t for t in tasks}
    for a in result.assignments:
        t = tasks_by_id[a.task_id]
        assert len(a.providers) == t.replicas == len(set(a.providers))
        operators = [by_address[x].operator for x in a.providers]
        taken = {by_address[x].operator for x in t.assigned if x in by_address}
        assert len(set(operators)) == len(operators) and not taken & set(operators)
        for x in a.providers:
            p = by_address[x]
            assert passes(p, t, config, NOW, free=p.total), (t, p)  # every filter but free capacity
            assert p.prices.ask(t.resources, t.timeout_s) <= t.budget
            u = used[x]
            u[0] += t.resources.cpus
            u[1] += t.resources.memory_mb
            u[2] += t.resources.disk_mb
            u[3] += t.resources.gpus
    for x, (cpus, mem, disk, gpus) in used.items():
        p, extra = by_address[x], freed[x]
        assert cpus <= p.free.cpus + extra.cpus + 1e-9
        assert mem <= p.free.memory_mb + extra.memory_mb
        assert disk <= p.free.disk_mb + extra.disk_mb
        assert gpus <= p.free.gpus + extra.gpus
    for u in result.unplaced:
        assert u.code != "unknown" and u.reason, u


@settings(max_examples=60, deadline=None)
@given(providers_st(), tasks_st())
def test_an_unplaced_task_really_has_no_room(providers: list[ProviderView], tasks: list[TaskView]) -> None:
    """With one task per round, "unplaced" means no k distinct operators pass every filter (brute force)."""
    config = MatchConfig(preemption=False)
    for t in tasks:
        result = match(providers, [t], config, NOW)
        taken = {p.operator for p in providers if p.address in t.assigned}
        ops = {p.operator for p in providers if passes(p, t, config, NOW) and p.operator not in taken}
        assert bool(result.assignments) == (len(ops) >= t.replicas), (t, result)


moves_st = st.lists(st.tuples(st.integers(0, 11), st.sampled_from([0.5, 1.0, 4.0]),
                              st.sampled_from([0, 256, 4096]), st.sampled_from([-1, 1])), max_size=8)


@settings(max_examples=100, deadline=None)
@given(providers_st(), tasks_st(), moves_st, st.sampled_from([4096, 2]))
def test_the_funnel_explains_like_the_reference_as_capacity_moves(
        providers: list[ProviderView], tasks: list[TaskView], moves: list[tuple[int, float, int, int]],
        checkpoints: int) -> None:
    """Bit masks, operator blocks, the price index and free-capacity thresholds kept current give the
    reference's explanation."""
    eligible = [p for p in sorted(providers, key=lambda p: p.address)
                if all(pred(p, CFG, NOW) for _, pred in filters.PROVIDER_FILTERS)]
    steps = (("providers", len(providers)),)
    free = [(p.free.cpus, p.free.memory_mb, p.free.disk_mb, p.free.gpus) for p in eligible]
    funnel = Funnel(eligible, CFG, steps, lambda rank: free[rank], checkpoints)
    reference = filters.Explainer(eligible, CFG, steps)
    by_address = {p.address: p for p in providers}

    def check() -> None:
        rank_of = {p.address: rank for rank, p in enumerate(eligible)}
        for t in tasks:
            taken = frozenset(by_address[a].operator for a in t.assigned if a in by_address)
            want = reference.explain(t, lambda p: Resources(*free[rank_of[p.address]]), taken)
            assert funnel.explain(t, taken) == want

    check()  # builds the thresholds the moves below must keep current
    for index, cpus, mem, sign in moves:
        if not eligible:
            break
        rank = index % len(eligible)
        old = free[rank]
        free[rank] = (old[0] + sign * cpus, old[1] + sign * mem, old[2], old[3])
        funnel.moved(rank, old, free[rank])
    check()


def test_the_funnel_counts_distinct_operators_by_blocks() -> None:
    ps = [provider(f"0x{i}", operator=op) for i, op in enumerate(["a", "b", "a", "c", "b", "a"])]
    funnel = Funnel(ps, CFG, (), lambda rank: (8.0, 16_384, 100_000, 0))
    bits = [1 << b for b in funnel.bit]
    assert funnel.operators(0) == 0
    assert funnel.operators(funnel.all) == 3
    assert funnel.operators(bits[0] | bits[2] | bits[5]) == 1  # three providers of operator "a"
    assert funnel.operators(bits[0] | bits[1]) == 2
    assert funnel.operators(bits[3] | bits[4] | bits[5]) == 3


@settings(max_examples=100, deadline=None)
@given(tasks_st(), tasks_st(), st.sampled_from([frozenset(), frozenset({"img2"})]))
def test_the_failure_index_finds_the_failure_a_walk_would(kept: list[TaskView], later: list[TaskView],
                                                          open_images: frozenset[str]) -> None:
    """Cells by (runtime, cpus, memory) sorted by budget give the oldest covering failure, as a walk does."""
    index, walk = Failures(), []
    for t in kept:
        why = explain(t, [], CFG, NOW)
        index.add(t, why)
        walk = [(o, w) for o, w in walk
                if not (o.runtime == t.runtime and o.image_digest == t.image_digest and covers(t, o))]
        walk.append((t, why))
    for t in later:
        want = next((o for o, _ in walk if o.runtime == t.runtime and covers(o, t)
                     and (o.image_digest == t.image_digest or o.image_digest not in open_images)), None)
        got = index.covering(t, lambda image: image in open_images)
        assert (got and got.task) == want
    index.drop(lambda o: o.replicas > 1)
    assert all(got.task.replicas == 1 for t in later if (got := index.covering(t, lambda image: False)))


@st.composite
def similar_tasks_st(draw: st.DrawFn) -> list[TaskView]:
    """New tasks alike but for size, budget and priority, so that failures cover later tasks."""
    out = []
    runtime, image = draw(st.sampled_from(["docker", "wasm"])), draw(st.sampled_from(["img1", "img2"]))
    for i in range(draw(st.integers(1, 20))):
        out.append(TaskView(
            task_id=f"t{i}", customer=draw(st.sampled_from(["x", "y"])), runtime=runtime, image_digest=image,
            resources=Resources(draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])), 256, 10, 0),
            budget=draw(st.integers(0, 6)) * GRID, replicas=draw(st.integers(1, 2)),
            priority=draw(st.integers(0, 2)), submitted_at=float(i)))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(providers_st(), st.one_of(tasks_st(), similar_tasks_st()),
       st.builds(MatchConfig, strategy=st.sampled_from(["best_fit", "spread"]), preemption=st.booleans(),
                 candidate_window=st.integers(1, 3)))
def test_remembered_failures_never_change_a_placement(providers: list[ProviderView], tasks: list[TaskView],
                                                      config: MatchConfig) -> None:
    """A task that a remembered failure covers would have failed anyway: the same round without the memory
    places the same tasks on the same providers and evicts the same replicas."""
    from marketplace.matching import engine

    tasks = [replace(t, assigned=frozenset()) for t in tasks]  # only failures of new tasks are remembered
    with_memory = match(providers, tasks, config, NOW)

    class Forgetful(engine._Round):  # the same round without the memory
        def _dominated(self, t: TaskView) -> None:
            return None

    without = Forgetful(providers, config, NOW).run(tasks)
    assert with_memory.assignments == without.assignments
    assert with_memory.preemptions == without.preemptions
    assert [u.task_id for u in with_memory.unplaced] == [u.task_id for u in without.unplaced]


def test_config_rejects_unknown_strategy() -> None:
    import pytest

    from hashgrid.errors import InvalidInput

    with pytest.raises(InvalidInput, match="strategy"):
        MatchConfig(strategy="random")  # type: ignore[arg-type]
    assert replace(CFG, strategy="spread").strategy == "spread"
