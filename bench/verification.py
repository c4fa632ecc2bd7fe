"""`python -m bench.verification`: what verification costs, in gas and in replica-runs.

1. Gas per task end to end (post, assign, commit, reveal, finalize with settlement, then the payees' claims)
   for k = 1, 3, 5, one call per step and batched by 10 and 100, from real receipts on anvil (bench.gas).
2. Replica-runs per accepted task under adaptive replication against fixed k = 3, with 10% cheating
   providers, naive (always wrong) and strategic (honest until trusted to run alone, then wrong on a
   fraction of tasks), and the rate of wrong results accepted for each (bench.verification_sim; theory in
   docs/verification.md).

`--quick` runs one seed of 30,000 measured tasks per row (the strategic row 24 times that, after the adaptive
rows' 600,000-task warm-up: bench.verification_sim says why); `--write-docs` rewrites docs/gas.md and
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from datetime import date

from rich.console import Console

from bench import gas
from bench import verification_sim as sim


def write_gas_section(rows: list[gas.Row]) -> None:
    """The gas per task end to end as a section of docs/benchmarks.md (the full step table: docs/gas.md)."""
    lines = [
        "## Verification (gas per task)",
        "",
        f"`python -m bench.verification` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{date.today().isoformat()}: real receipts on anvil, a task's life (post, assign, commit, reveal, "
        "finalize with settlement) and with its share of the payees' claims, per task; every step and the "
        "largest transaction in docs/gas.md.",
        "",
        "| k | calls | life (gas / task) | with claims | target |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        target = f"≤ {gas.TARGET:,}" if (r.k, r.mode) == (3, "batch 100") else "-"
        lines.append(f"| {r.k} | {r.mode} | {r.life:,.0f} | {r.total:,.0f} | {target} |")
    section = "\n".join(lines) + "\n"
    text = sim.DOCS.read_text()
    pattern = re.compile(r"^## Verification \(gas per task\)\n.*?(?=^## |\Z)", re.S | re.M)
    text = (pattern.sub(section + "\n", text) if pattern.search(text)
            else text.replace("## Verification (simulation)", section + "\n## Verification (simulation)", 1))
    sim.DOCS.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="seeded simulation runs per row (the median)")
    parser.add_argument("--tasks", type=int, default=100_000, help="simulated tasks measured per run")
    parser.add_argument("--quick", action="store_true", help="1 simulation run of 30,000 tasks")
    parser.add_argument("--write-docs", action="store_true",
                        help="rewrite docs/gas.md and the Verification sections of docs/benchmarks.md")
    args = parser.parse_args()
    console = Console()
    if not console.is_terminal:
        console.width = 140
    started = time.monotonic()
    console.print("[bold]1. gas per task on anvil[/bold] (k = 1, 3, 5; single calls and batches of 10, 100)")
    rows, stores_result = gas.measure()
    console.print(gas.render_table(rows))
    gas_seconds = time.monotonic() - started
    runs, tasks = (1, 30_000) if args.quick else (args.runs, args.tasks)
    console.print(f"[bold]2. replica-runs per accepted task[/bold] ({runs} run(s) of {tasks:,} tasks)")
    sim_rows = sim.measure(runs, tasks)
    console.print(sim.render(sim_rows, runs))
    console.print("Strategic cheaters: the wrong/10k figure above is stated, not bounded; what it costs them "
                  "(a slash of slashDissentBps of the stake per conviction, and the lost record) is worked "
                  "out in docs/verification.md §3.1.")
    if args.write_docs:
        gas.write_doc(rows, gas_seconds, stores_result=stores_result)
        sim.write_docs(sim_rows, runs)
        write_gas_section(rows)
        console.print("wrote docs/gas.md and the Verification sections of docs/benchmarks.md")


if __name__ == "__main__":
    main()
