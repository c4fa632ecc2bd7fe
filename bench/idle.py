"""`python -m bench.idle`: what a local network costs when it has nothing to do.

Starts `hashgrid up --keep` (anvil, the marketplace with its in-process jobs, provider daemons) in a temporary
state folder, lets its sample tasks settle, then reads each process group's CPU time from /proc over a window
(60 s by default) and prints it as a share of one core, with anvil's as the baseline of the same run. Targets
(issue 19): the marketplace at most 1% of a core, each provider daemon at most 0.5%.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"marketplace": 1.0, "provider": 0.5}  # % of one core

console = Console()


@dataclass
class Sample:
    """CPU seconds of a process group: its live members plus the children they have reaped."""

    seconds: float
    members: int


def group_cpu(pgid: int) -> Sample:
    total, members = 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited between listing and reading
        # fields[0] is state (field 3); pgrp is field 5, utime..cstime are fields 14-17
        if int(fields[2]) != pgid:
            continue
        total += sum(int(value) for value in fields[11:15])
        members += 1
    return Sample(total / TICKS, members)


def wait_for_file(path: Path, launcher: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if launcher.poll() is not None:
            raise SystemExit(f"hashgrid up exited with {launcher.returncode} before writing {path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"hashgrid up did not write {path} within {timeout:.0f}s")
        time.sleep(0.5)  # polling a file another process writes


def role(name: str) -> str:
    return "provider" if name.startswith("provider") else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window (default 60)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to wait after the summary before measuring (the last claims)")
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--runtime", default="wasm", help="runtime passed to hashgrid up (default wasm)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hashgrid-idle-") as state_dir:
        env = dict(os.environ, HASHGRID_STATE_DIR=state_dir)
        state = Path(state_dir) / "up"
        log = Path(state_dir) / "up.out"
        console.print(f"hashgrid up --keep ({args.providers} providers, {args.runtime}); log {log}")
        with log.open("wb") as out:
            launcher = subprocess.Popen(
                [sys.executable, "-m", "hashgrid.cli", "up", "--keep", "--providers", str(args.providers),
                 "--runtime", args.runtime, "--tasks", "2"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_file(state / "summary.json", launcher, timeout=600)
            time.sleep(args.settle)  # let the network come to rest: not synchronisation, part of the method
            pids = {p.stem: int(p.read_text()) for p in sorted((state / "pids").glob("*.pid"))}
            console.print(f"at rest; measuring {args.seconds:.0f}s of CPU for: {', '.join(pids)}")
            before = {name: group_cpu(pid) for name, pid in pids.items()}
            launcher_before = group_cpu(launcher.pid)
            started = time.monotonic()
            time.sleep(args.seconds)  # the measurement window itself
            wall = time.monotonic() - started
            after = {name: group_cpu(pid) for name, pid in pids.items()}
            launcher_after = group_cpu(launcher.pid)
        finally:
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()

    rows = [(name, 100 * (after[name].seconds - before[name].seconds) / wall) for name in pids]
    rows.append(("hashgrid up (launcher)", 100 * (launcher_after.seconds - launcher_before.seconds) / wall))
    baseline = next((share for name, share in rows if name == "anvil"), None)
    table = Table(title=f"CPU at rest over {wall:.0f} s (% of one core)")
    for column in ("process", "CPU %", "× anvil", "target", "met"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for name, share in rows:
        target = TARGETS.get(role(name))
        ratio = f"{share / baseline:.1f}" if baseline else "-"
        table.add_row(name, f"{share:.2f}", ratio, f"≤ {target}" if target else "baseline" if name == "anvil"
                      else "-", ("yes" if share <= target else "NO") if target else "")
    console.print(table)
    missed = [name for name, share in rows if (t := TARGETS.get(role(name))) is not None and share > t]
    if missed:
        console.print(f"over target: {', '.join(missed)}")


if __name__ == "__main__":
    main()
