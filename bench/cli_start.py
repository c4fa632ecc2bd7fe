"""`python -m bench.cli_start`: how long a `hashgrid` command spends importing before it does anything.

Runs each command N times in a fresh interpreter with `-X importtime` and sums the top-level imports'
cumulative times (median of the runs), beside `python -c pass` (the interpreter's own start-up imports) as the
baseline of the same run; the wall time of the whole process is printed too. `task status` runs against a
marketplace that does not answer (port 9 on loopback) with a raw key from the environment, so it pays every
import a real status call pays and then fails fast. Target (issue 19): at most 0.3 s of imports for `--help`
and `task status`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.3
DEV_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # DEV-ONLY: anvil key 1
LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$")

console = Console()


def imports_s(stderr: str) -> float:
    """Seconds spent in top-level imports (nested ones are inside their parent's cumulative time)."""
    return sum(int(m.group(1)) for line in stderr.splitlines() if (m := LINE.match(line))) / 1e6


def measure(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    imports, walls = [], []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120)
        walls.append(time.perf_counter() - started)
        imports.append(imports_s(done.stderr))
    return statistics.median(imports), statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hashgrid-cli-") as scratch:
        deployment = Path(scratch) / "deployment.json"
        deployment.write_text(json.dumps({"chain_id": 31337, "rpc_url": "http://127.0.0.1:9", "addresses": {},
                                          "abis": {}, "start_block": 0, "deployer": "0x" + "00" * 20}))
        env = dict(os.environ, HASHGRID_STATE_DIR=scratch, BENCH_KEY=DEV_KEY)
        unreachable = ["--marketplace", "http://127.0.0.1:9", "--rpc", "http://127.0.0.1:9",
                       "--deployment", str(deployment), "--key-env", "BENCH_KEY"]
        rows = [("python -c pass (baseline)", ["-c", "pass"], None),
                ("hashgrid --version", ["-m", "hashgrid.cli", "--version"], TARGET_S),
                ("hashgrid --help", ["-m", "hashgrid.cli", "--help"], TARGET_S),
                ("hashgrid task --help", ["-m", "hashgrid.cli", "task", "--help"], None),
                ("hashgrid task status 1", ["-m", "hashgrid.cli", "task", "status", "1", *unreachable],
                 TARGET_S)]
        table = Table(title=f"Command start (median of {args.runs} runs)")
        for column in ("command", "imports s", "process wall s", "target", "met"):
            table.add_column(column, justify="left" if column == "command" else "right")
        for label, argv, target in rows:
            imported, wall = measure(argv, env, args.runs)
            table.add_row(label, f"{imported:.3f}", f"{wall:.3f}", f"≤ {target}" if target else "-",
                          ("yes" if imported <= target else "NO") if target else "")
    console.print(table)
    console.print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
