"""The fast engine places exactly as the reference engine (whole-bucket candidate search, no failure memory):
on random fleets and queues, with and without runtime classes, and on the benchmark's seeded inputs."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.matching import NOW as BENCH_NOW
from bench.matching import synthetic_providers, synthetic_tasks, with_classes
from marketplace.matching import MatchConfig, MatchResult, Prices, ProviderView, TaskView, match
from marketplace.matching.reference import reference_match
from tests.marketplace.test_matching import GRID, NOW, providers_st, tasks_st
from tests.marketplace.test_matching_classes import classed_st, classed_tasks_st

configs = st.builds(MatchConfig, strategy=st.sampled_from(["best_fit", "spread", "least_loaded"]),
                    fairness=st.sampled_from(["round_robin", "deficit", "fifo"]),
                    preemption=st.booleans(), candidate_window=st.integers(1, 4))


def same_placements(fast: MatchResult, ref: MatchResult) -> None:
    assert fast.assignments == ref.assignments
    assert fast.preemptions == ref.preemptions
    assert [u.task_id for u in fast.unplaced] == [u.task_id for u in ref.unplaced]


def check(providers: list[ProviderView], tasks: list[TaskView], config: MatchConfig,
          now: float = NOW) -> None:
    same_placements(match(providers, tasks, config, now), reference_match(providers, tasks, config, now))


@st.composite
def priced_st(draw: st.DrawFn) -> list[ProviderView]:
    """Fleets whose providers differ in every price component, so that the budget rules out some of them."""
    out = []
    for p in draw(providers_st()):
        prices = Prices(base=draw(st.integers(0, 4)) * GRID // 4,
                        per_cpu_second=draw(st.integers(0, 3)) * GRID // 64,
                        per_gb_second=draw(st.integers(0, 3)) * GRID // 64,
                        per_gpu_second=draw(st.integers(0, 3)) * GRID // 16)
        out.append(replace(p, prices=prices))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(providers_st(), priced_st()), tasks_st(), configs)
def test_the_engine_places_as_the_reference(providers: list[ProviderView], tasks: list[TaskView],
                                            config: MatchConfig) -> None:
    check(providers, tasks, config)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classed_st(), classed_tasks_st(), configs)
def test_the_engine_places_as_the_reference_with_classes(providers: list[ProviderView], tasks: list[TaskView],
                                                         config: MatchConfig) -> None:
    check(providers, tasks, config)


def test_the_engine_places_as_the_reference_on_the_benchmark_inputs() -> None:
    """The benchmark's seeded fleet and queue, scaled down: hundreds of placements, dozens of preemptions."""
    providers = synthetic_providers(300, seed=1)
    tasks = synthetic_tasks(2_000, seed=2)
    for fleet in (providers, with_classes(providers, 0.2, seed=3)):
        fast = match(fleet, tasks, MatchConfig(), BENCH_NOW)
        assert len(fast.assignments) > 500 and fast.preemptions
        check(fleet, tasks, MatchConfig(), BENCH_NOW)
