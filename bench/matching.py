"""Matching decisions per second against a naive scan: 1,000 and 10,000 providers with 100,000 queued tasks
(most fail, decided by lookup), and 10,000 providers with 10,000 tasks (placement-heavy: nearly all fit).

`python -m bench.matching` (`--quick` for a smaller run). Synthetic, seeded inputs; one core; the median of
a few runs; the naive baseline (every provider checked per task) is measured in the same run on a sample.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import replace

from rich.console import Console
from rich.table import Table

from marketplace.matching import (
    NATIVE,
    MatchConfig,
    Prices,
    ProviderView,
    Resources,
    RunningReplica,
    TaskView,
    match,
    passes,
)
from marketplace.matching.models import WEI_PER_GRID

NOW = 1_700_000_000.0
GPU_MODELS = ("A100", "L4", "T4")
DIGESTS = tuple(f"{i:064x}" for i in range(400))
IMAGES = tuple(f"sha256:{i:064x}" for i in range(50))
MICRO = WEI_PER_GRID // 1_000_000  # 1e-6 GRID


def synthetic_providers(n: int, seed: int) -> list[ProviderView]:
    """A mixed fleet: mostly CPU boxes of 4-64 cores, a tenth with GPUs, a few stale or picky ones."""
    rng = random.Random(seed)
    out = []
    operators = max(1, n // 3)
    for i in range(n):
        cpus = rng.choice((4, 8, 16, 32, 64))
        mem = cpus * rng.choice((2048, 4096, 8192))
        gpus = rng.choice((1, 2, 4, 8)) if rng.random() < 0.1 else 0
        total = Resources(float(cpus), mem, 200_000, gpus)
        used = rng.random() * 0.5
        free = Resources(float(int(cpus * (1 - used))), int(mem * (1 - used)), 150_000, gpus)
        running = tuple(RunningReplica(f"run-{i}-{j}", rng.choice((0, 0, 1)), Resources(1.0, 512, 100, 0))
                        for j in range(rng.randint(0, 2)))
        out.append(ProviderView(
            address=f"0x{rng.getrandbits(160):040x}",
            operator=f"op-{rng.randrange(operators)}",
            runtimes=rng.choice((frozenset({"docker", "wasm"}),) * 7 + (frozenset({"docker"}),) * 2
                                + (frozenset({"wasm"}),)),
            arch="x86_64" if rng.random() < 0.8 else "aarch64",
            total=total, free=free,
            prices=Prices(base=rng.randint(1, 50) * MICRO, per_cpu_second=rng.randint(1, 10) * MICRO,
                          per_gb_second=rng.randint(1, 5) * MICRO,
                          per_gpu_second=rng.randint(50, 200) * MICRO),
            stake=rng.randint(50, 10_000) * WEI_PER_GRID,
            reputation=rng.uniform(0.1, 1.0),
            last_heartbeat=NOW - (rng.uniform(0, 20) if rng.random() < 0.97 else 600.0),
            gpu_model=rng.choice(GPU_MODELS) if gpus else None,
            gpu_memory_mb=rng.choice((16_384, 24_576, 81_920)) if gpus else 0,
            allows_network=rng.random() < 0.3,
            max_task=Resources(8.0, 32_768, 100_000, 8) if rng.random() < 0.1 else None,
            allowed_images=frozenset(rng.sample(IMAGES, 5)) if rng.random() < 0.05 else None,
            cached_digests=frozenset(rng.sample(DIGESTS, 3)) if rng.random() < 0.1 else frozenset(),
            running=running,
        ))
    return out


def with_classes(providers: Sequence[ProviderView], runsc_share: float, seed: int) -> list[ProviderView]:
    """The fleet with runtime classes as live registration fills them: docker on gVisor for `runsc_share` of
    the providers, else runc; wasm; a GPU class (model, CUDA 12) for GPU providers."""
    rng = random.Random(seed)
    out = []
    for p in providers:
        backend = "runsc" if rng.random() < runsc_share else "runc"
        classes = {backend} if "docker" in p.runtimes else set()
        if "wasm" in p.runtimes:
            classes.add("wasm")
        if p.total.gpus and "docker" in p.runtimes:
            classes.add(f"runc/{p.gpu_model}/cuda12")
        out.append(replace(p, classes=frozenset(classes)))
    return out


def synthetic_tasks(n: int, seed: int) -> list[TaskView]:
    """A queue where one customer posted a third of the tasks; budgets vary continuously around asks."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        customer = "whale" if rng.random() < 0.33 else f"cust-{rng.randrange(300)}"
        runtime = "docker" if rng.random() < 0.7 else "wasm"
        gpus = 1 if rng.random() < 0.05 else 0
        cpus = rng.choice((0.5, 1.0, 2.0, 4.0, 8.0))
        mem = rng.choice((256, 512, 1024, 2048, 4096, 8192))
        timeout = rng.choice((60, 300, 600, 3600))
        typical = 25 * MICRO + timeout * int(cpus * 5 * MICRO + gpus * 120 * MICRO + mem * 3 * MICRO // 1024)
        out.append(TaskView(
            task_id=f"task-{i:06d}",
            customer=customer,
            runtime=runtime,
            image_digest=rng.choice(IMAGES),
            resources=Resources(cpus, mem, rng.choice((256, 1024, 4096)), gpus),
            budget=int(typical * rng.uniform(0.3, 3.0)),
            replicas=rng.choice((1, 1, 2, 3)),
            timeout_s=timeout,
            priority=rng.choice((0,) * 8 + (1, 2)),
            submitted_at=NOW - rng.uniform(0, 3600),
            arch=(rng.choice(("x86_64",) * 8 + ("aarch64",) + (None,)) if runtime == "docker" else None),
            gpu_model=rng.choice(GPU_MODELS + (None,)) if gpus else None,
            network=rng.random() < 0.1,
            input_digests=frozenset(rng.sample(DIGESTS, 2)) if rng.random() < 0.3 else frozenset(),
        ))
    return out


def naive_match(providers: Sequence[ProviderView], tasks: Sequence[TaskView], config: MatchConfig,
                now: float) -> int:
    """The baseline: per task, check every provider with the reference filters and take the tightest fits."""
    free = {p.address: p.free for p in providers}
    placed = 0
    for t in sorted(tasks, key=lambda t: (-t.priority, t.submitted_at, t.task_id)):
        fits = sorted((free[p.address].cpus, p.address, p) for p in providers
                      if passes(p, t, config, now, free[p.address]))
        chosen, ops = [], set()
        for _, _, p in fits:
            if p.operator not in ops:
                ops.add(p.operator)
                chosen.append(p)
                if len(chosen) == t.replicas:
                    break
        if len(chosen) == t.replicas:
            placed += 1
            need = t.resources
            for p in chosen:
                f = free[p.address]
                free[p.address] = Resources(f.cpus - need.cpus, f.memory_mb - need.memory_mb,
                                            f.disk_mb - need.disk_mb, f.gpus - need.gpus)
    return placed


def _timed(fn, *args) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    elapsed, _, result = _timed_cpu(fn, *args)
    return elapsed, result


def _timed_cpu(fn, *args) -> tuple[float, float, object]:  # type: ignore[no-untyped-def]
    """Wall and CPU seconds of one call: on a shared machine the CPU time is what waiting does not inflate."""
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - start, time.process_time() - cpu, result


def run(cases: Sequence[tuple[int, int]], repeats: int, naive_sample: int, console: Console,
        measure_memory: bool = True, runsc_share: float | None = None) -> list[dict]:
    """One row per (providers, tasks) case; the tasks of a smaller case are the first of the same queue."""
    config = MatchConfig()
    queue = synthetic_tasks(max(n for _, n in cases), seed=2)
    rows = []
    for case, (n, n_tasks) in enumerate(cases):
        tasks = queue[:n_tasks]
        providers = synthetic_providers(n, seed=1)
        if runsc_share is not None:
            providers = with_classes(providers, runsc_share, seed=3)
        times, cpu_times, result = [], [], None
        for _ in range(repeats):
            elapsed, cpu, result = _timed_cpu(match, providers, tasks, config, NOW)
            times.append(elapsed)
            cpu_times.append(cpu)
        assert result is not None
        median = statistics.median(times)
        if case == 0 and measure_memory:
            tracemalloc.start()
            match(providers, tasks, config, NOW)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        else:
            peak = float("nan")
        sample = tasks[:naive_sample]
        naive_s, _ = _timed(naive_match, providers, sample, config, NOW)
        codes: dict[str, int] = {}
        for u in result.unplaced:  # type: ignore[attr-defined]
            codes[u.code] = codes.get(u.code, 0) + 1
        rows.append({
            "providers": n, "tasks": n_tasks, "median_s": median,
            "rate": result.decisions / median,  # type: ignore[attr-defined]
            "cpu_rate": result.decisions / statistics.median(cpu_times),  # type: ignore[attr-defined]
            "placed": len(result.assignments), "unplaced": len(result.unplaced),  # type: ignore[attr-defined]
            "preemptions": len(result.preemptions),  # type: ignore[attr-defined]
            "naive_rate": len(sample) / naive_s, "peak_mb": peak, "codes": codes,
        })
        console.log(f"{n} providers, {n_tasks} tasks: {median:.2f} s median of {repeats}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks and one run per fleet size")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size; the median is reported")
    parser.add_argument("--runsc-share", type=float, default=None,
                        help="give providers runtime classes, this share of them running docker under gVisor "
                             "(default: no classes, one class per runtime)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    console = Console()
    if args.quick:
        cases, repeats, sample = [(1_000, 10_000), (10_000, 10_000)], 1, 100
    else:  # the last row is placement-heavy: 9,956 of its 10,000 tasks are placed
        cases, repeats, sample = [(1_000, 100_000), (10_000, 100_000), (10_000, 10_000)], args.repeats, 200
    load_before = os.getloadavg()  # the machine is shared: a busy one slows every figure
    rows = run(cases, repeats, sample, console, runsc_share=args.runsc_share)
    load_after = os.getloadavg()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine = "compiled by mypyc" if NATIVE else "Python (HASHGRID_MATCHING_NATIVE=0 or no build)"
    table = Table(title=f"Matching: decisions/s, one core, median of {repeats}; engine {engine}")
    for col in ("providers", "tasks", "round (s)", "decisions/s", "per CPU-s", "placed", "unplaced",
                "preempted", f"naive/s ({sample:,} tasks)", "speed-up", "peak MB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['providers']:,}", f"{r['tasks']:,}", f"{r['median_s']:.2f}", f"{r['rate']:,.0f}",
                      f"{r['cpu_rate']:,.0f}",
                      f"{r['placed']:,}", f"{r['unplaced']:,}", f"{r['preemptions']:,}",
                      f"{r['naive_rate']:,.0f}", f"{r['rate'] / r['naive_rate']:,.0f}x",
                      f"{r['peak_mb']:.0f}")
    console.print(table)
    first = rows[0]["providers"]
    console.print(f"peak MB: allocations during one round at {first:,} providers (tracemalloc); "
                  f"whole process peak RSS {peak_rss:.0f} MB")
    console.print("load average (1, 5, 15 min): before " + " / ".join(f"{x:.2f}" for x in load_before)
                  + ", after " + " / ".join(f"{x:.2f}" for x in load_after))
    for r in rows:
        ranked = sorted(r["codes"].items(), key=lambda x: -x[1])
        top = ", ".join(f"{code} {count:,}" for code, count in ranked)
        console.print(f"{r['providers']:,} providers, {r['tasks']:,} tasks, unplaced by reason: {top}")


if __name__ == "__main__":
    main()
