"""Runtime classes in the matching engine: every replica of a task runs in one class (backend; GPU model and
CUDA major for GPU work), extra replicas join the class a task has, and the reason says when no class has
enough operators. Property tests hold the engine and the funnel to the reference on fleets with classes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.matching import MatchConfig, ProviderView, TaskView, explain, filters, match, passes
from marketplace.matching.funnel import Funnel
from tests.marketplace.test_matching import CFG, NOW, one_unplaced, provider, providers_st, task, tasks_st

H200 = "runc/NVIDIA H200/cuda12"


def fleet(*classes: str, gpus: int = 0) -> list[ProviderView]:
    return [provider(f"0x{i:02x}", classes=frozenset({c}) | ({"wasm"} if not gpus else set()), gpus=gpus,
                     gpu_model=c.split("/")[1] if "/" in c else None)
            for i, c in enumerate(classes)]


def test_a_mixed_fleet_places_all_replicas_in_one_class() -> None:
    ps = fleet("runsc", "runc", "runc", "runc")
    result = match(ps, [task("t", replicas=3)], CFG, NOW)
    (a,) = result.assignments
    assert a.runtime_class == "runc" and set(a.providers) == {"0x01", "0x02", "0x03"}


def test_no_class_with_enough_operators_says_so() -> None:
    ps = fleet("runsc", "runc", "runc")
    u = one_unplaced(ps, task("t", replicas=3))
    assert u.code == "class"
    assert "runc: 2, runsc: 1" in u.reason and "one class" in u.reason
    assert dict(u.funnel)["operators"] == 3 and dict(u.funnel)["class"] == 2


def test_the_busy_reason_counts_in_one_class() -> None:
    ps = fleet("runsc", "runsc", "runc", "runc")
    ps[0] = replace(ps[0], free=replace(ps[0].free, cpus=0.0))
    ps[2] = replace(ps[2], free=replace(ps[2].free, cpus=0.0))
    u = one_unplaced(ps, task("t", replicas=2))
    assert u.code == "busy" and dict(u.funnel)["class"] == 2 and dict(u.funnel)["free"] == 1


def test_extra_replicas_join_the_class_the_task_has() -> None:
    ps = fleet("runsc", "runsc", "runc", "runc", "runc")
    extra = task("t", replicas=1, assigned=frozenset({"0x00"}), runtime_class="runsc")
    (a,) = match(ps, [extra], CFG, NOW).assignments
    assert a.providers == ("0x01",) and a.runtime_class == "runsc"
    assert one_unplaced(ps, replace(extra, assigned=frozenset({"0x00", "0x01"}))).code == "assigned"
    gone = [p for p in ps if "runsc" not in p.classes]  # the task's class left: runc providers never join it
    u = one_unplaced(gone, extra)
    assert u.code == "runtime" and "in class runsc" in u.reason


def test_gpu_replicas_share_model_and_cuda_major() -> None:
    ps = fleet(H200, H200, "runc/NVIDIA H200/cuda11", "runc/Tesla T4/cuda12", gpus=1)
    ps = [replace(p, classes=p.classes | {"runc"}) for p in ps]
    (a,) = match(ps, [task("g", gpus=1, replicas=2)], CFG, NOW).assignments
    assert a.runtime_class == H200 and set(a.providers) == {"0x00", "0x01"}
    assert one_unplaced(ps, task("g", gpus=1, replicas=3)).code == "class"
    # a CPU task on the same fleet: one class (runc), all four qualify
    (cpu,) = match(ps, [task("c", replicas=4)], CFG, NOW).assignments
    assert cpu.runtime_class == "runc" and len(cpu.providers) == 4


def test_a_gpu_task_among_providers_without_a_gpu_class_is_told_it_lacks_a_gpu() -> None:
    """They run docker, but in no GPU class: the reason names the GPU, not the runtime."""
    u = one_unplaced(fleet("runc", "runsc"), task("g", gpus=1))
    assert u.code == "runtime"
    assert u.reason.startswith("no provider offers a GPU for runtime docker"), u.reason
    assert "2 of 2 online providers run docker" in u.reason


def test_a_provider_that_names_no_class_is_a_class_of_its_own() -> None:
    ps = [*fleet("runc", "runc"), provider("0x09")]  # 0x09: an old daemon, no classes
    assert one_unplaced(ps, task("t", replicas=3)).code == "class"
    (a,) = match(ps, [task("t", replicas=2)], CFG, NOW).assignments
    assert a.runtime_class == "runc"


def test_the_class_with_the_better_providers_wins() -> None:
    ps = fleet("runsc", "runsc", "runc", "runc")
    ps = [replace(p, reputation=1.0 if p.classes >= {"runsc"} else 0.1) for p in ps]
    (a,) = match(ps, [task("t", replicas=2)], CFG, NOW).assignments
    assert a.runtime_class == "runsc"


# ---------------------------------------------------------------- properties on fleets with classes

CLASSES = [frozenset(), frozenset({"runc", "wasm"}), frozenset({"runsc", "wasm"}), frozenset({"runc"}),
           frozenset({"runsc", "runc/T4/cuda12"}), frozenset({"runc", "runc/T4/cuda11"})]


@st.composite
def classed_st(draw: st.DrawFn) -> list[ProviderView]:
    return [replace(p, classes=draw(st.sampled_from(CLASSES))) for p in draw(providers_st())]


@st.composite
def classed_tasks_st(draw: st.DrawFn) -> list[TaskView]:
    pinned = st.sampled_from([None, None, "runc", "runsc", "wasm", "runc/T4/cuda12", "docker"])
    return [replace(t, runtime_class=draw(pinned)) for t in draw(tasks_st())]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classed_st(), classed_tasks_st(),
       st.builds(MatchConfig, strategy=st.sampled_from(["best_fit", "spread", "least_loaded"]),
                 preemption=st.booleans(), candidate_window=st.integers(1, 4)))
def test_every_assignment_stays_in_one_class(providers: list[ProviderView], tasks: list[TaskView],
                                             config: MatchConfig) -> None:
    result = match(providers, tasks, config, NOW)
    by_address = {p.address: p for p in providers}
    tasks_by_id = {t.task_id: t for t in tasks}
    used: dict[str, float] = defaultdict(float)
    for a in result.assignments:
        t = tasks_by_id[a.task_id]
        assert a.runtime_class is not None and len(a.providers) == t.replicas
        assert t.runtime_class in (None, a.runtime_class)
        for x in a.providers:
            p = by_address[x]
            assert a.runtime_class in filters.task_classes(p, t), (a, p)
            assert passes(p, t, config, NOW, free=p.total)
            used[x] += t.resources.cpus
    freed = defaultdict(float)
    for pre in result.preemptions:
        freed[pre.provider] += next(r for r in by_address[pre.provider].running
                                    if r.task_id == pre.task_id).resources.cpus
    assert all(cpus <= by_address[x].free.cpus + freed[x] + 1e-9 for x, cpus in used.items())
    assert all(u.code != "unknown" and u.reason for u in result.unplaced)


@settings(max_examples=80, deadline=None)
@given(classed_st(), classed_tasks_st())
def test_unplaced_means_no_class_has_room(providers: list[ProviderView], tasks: list[TaskView]) -> None:
    """One task per round: placed exactly when some class has k distinct operators passing every filter."""
    config = MatchConfig(preemption=False)
    for t in tasks:
        result = match(providers, [t], config, NOW)
        taken = {p.operator for p in providers if p.address in t.assigned}
        ops: dict[str, set[str]] = defaultdict(set)
        for p in providers:
            if passes(p, t, config, NOW) and p.operator not in taken:
                for c in filters.task_classes(p, t):
                    if t.runtime_class in (None, c):
                        ops[c].add(p.operator)
        placeable = any(len(o) >= t.replicas for o in ops.values())
        assert bool(result.assignments) == placeable, (t, result)
        if not placeable:
            (u,) = result.unplaced
            assert u.reason == explain(t, providers, config, NOW).reason


@settings(max_examples=100, deadline=None)
@given(classed_st(), classed_tasks_st())
def test_the_funnel_explains_classes_like_the_reference(providers: list[ProviderView],
                                                        tasks: list[TaskView]) -> None:
    eligible = [p for p in sorted(providers, key=lambda p: p.address)
                if all(pred(p, CFG, NOW) for _, pred in filters.PROVIDER_FILTERS)]
    steps = (("providers", len(providers)),)
    def free_of(rank: int) -> tuple[float, int, int, int]:
        f = eligible[rank].free
        return (f.cpus, f.memory_mb, f.disk_mb, f.gpus)

    funnel = Funnel(eligible, CFG, steps, free_of)
    reference = filters.Explainer(eligible, CFG, steps)
    by_address = {p.address: p for p in providers}
    for t in tasks:
        taken = frozenset(by_address[a].operator for a in t.assigned if a in by_address)
        assert funnel.explain(t, taken) == reference.explain(t, lambda p: p.free, taken)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classed_st(), classed_tasks_st(), st.booleans())
def test_failures_remembered_per_class_never_change_a_placement(
        providers: list[ProviderView],
        tasks: list[TaskView], preemption: bool) -> None:
    from marketplace.matching import engine

    config = MatchConfig(preemption=preemption, candidate_window=2)
    tasks = [replace(t, assigned=frozenset()) for t in tasks]
    with_memory = match(providers, tasks, config, NOW)

    class Forgetful(engine._Round):  # the same round without the memory
        def _dominated(self, t: TaskView) -> None:
            return None

    without = Forgetful(providers, config, NOW).run(tasks)
    assert with_memory.assignments == without.assignments
    assert with_memory.preemptions == without.preemptions
