"""`hashgrid up` as a newcomer runs it, in a subprocess: 3 wasm providers (one dishonest), 3 tasks plus the
unplaceable one the launcher always adds, on an anvil this test owns (`--rpc`), so the outcome is asserted
from the chain after the launcher has exited: every honest task settled exactly once, the cheater slashed,
every task's money accounted for, the escrow's balance equal to what it owes, the unplaceable task reported
with its reason, and none of the processes it started still alive. A second `up` while the lock is held by a
live process exits 2 and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from hashgrid.config import DEV_CANARY_KEY
from marketplace.jobs.canary import canary_accounts
from scripts.localnet import Anvil
from scripts.up import CANARY_WALLETS, pid_alive

ROOT = Path(__file__).resolve().parents[2]


def _env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
    env.update(HASHGRID_STATE_DIR=str(state_dir), COLUMNS="160")
    return env


def _children_pids(pid: int) -> set[int]:
    """Every live descendant of `pid`, from /proc (no psutil)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_up_runs_the_network_to_settlement_and_leaves_nothing(tmp_path: Path) -> None:
    with Anvil() as node:
        command = [sys.executable, "-m", "hashgrid.cli", "up", "--providers", "3", "--cheaters", "1",
                   "--tasks", "3", "--runtime", "wasm", "--rpc", node.url, "--timeout", "240"]
        process = subprocess.Popen(command, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        seen: set[int] = set()
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            seen |= _children_pids(process.pid)  # everything it ever started, to check none survives
            time.sleep(0.5)
        if process.poll() is None:
            process.terminate()
        output = process.communicate(timeout=60)[0].decode(errors="replace")
        assert process.returncode == 0, output[-6000:]

        state = tmp_path / "up"
        assert seen, "the launcher started no process"
        left = {pid for pid in seen if pid_alive(pid)}
        assert not left, f"processes left running: {left}"
        assert not list((state / "pids").glob("*.pid")), "pid files left behind"
        assert not (state / "up.lock").exists()

        summary = json.loads((state / "summary.json").read_text())
        assert summary["webapp"] == summary["marketplace"] + "/app/"  # and it is printed for people
        assert f"web app at {summary['webapp']}" in " ".join(output.split())
        deployment = Deployment.load(state / "deployment.json")
        contracts = Contracts.load(ChainClient(node.url), deployment)
        escrow, token = contracts.escrow, contracts.token
        events = escrow.events(0, "latest")
        cheater = next(p["address"] for p in summary["providers"] if p["dishonest"])

        placeable = [t for t in summary["tasks"] if t["placeable"] and t["kind"] != "adaptive"]
        assert len(placeable) == 3
        for task in placeable:
            task_id = task["task_id"]
            settled = [e for e in events if e.name == "TaskSettled" and int(e.args["taskId"]) == task_id]
            assert len(settled) == 1, (task_id, settled)
            assert escrow.result_of(task_id) is not None
            assert task["result_hash"] and task["state"] == "Settled"
            # every wei escrowed for the task went to providers, the treasury or back to the customer
            on_chain = escrow.get_task(task_id)
            escrowed = escrow.escrow_for(on_chain.max_replicas, on_chain.max_price_per_replica)
            args = settled[0].args
            assert int(args["paid"]) + int(args["fee"]) + int(args["refunded"]) == escrowed, (task_id, args)
            assert int(task["escrowed"]) == escrowed
            outcomes = {r["provider"].lower(): r["outcome"] for r in task["replicas"]}
            assert outcomes[cheater.lower()] == "Dissented", outcomes

        slashes = [e for e in contracts.registry.events(0, "latest") if e.name == "Slashed"
                   and str(e.args.get("provider", "")).lower() == cheater.lower()]
        assert slashes, "the dishonest provider was not slashed"
        assert contracts.registry.stake_of(cheater) < 50_000 * 10**18
        # every slash went to the treasury; the customer got back refunds only, so it ends down by exactly
        # what its providers were paid plus the fee (issue 12: a customer share of slashes made it rise)
        every_slash = contracts.registry.events(0, "latest", names=["Slashed"])
        recipients = {str(e.args["recipient"]) for e in every_slash}
        assert recipients == {contracts.timelock.address} == set(summary["treasury"]["slash_recipients"])
        spent = sum(int(t["paid"]) + int(t["fee"]) for t in summary["tasks"])
        assert int(summary["customer"]["wallet_change"]) == -spent, (summary["customer"], spent)

        # the trust-level task: nobody is trusted yet, so the replication policy bootstraps it as k = 3,
        # q = 2 on any providers (here all three); whoever was on it, the honest answer won
        (adaptive,) = [t for t in summary["tasks"] if t["kind"] == "adaptive"]
        assert adaptive["state"] == "Settled", adaptive
        agreed = [r for r in adaptive["replicas"] if r["outcome"] == "Agreed"]
        assert len(agreed) == 2 and cheater.lower() not in {r["provider"].lower() for r in agreed}, adaptive
        assert adaptive["result_hash"] == placeable[0]["result_hash"]  # the same wasm example, all honest
        honest = [p for p in summary["providers"] if not p["dishonest"]]
        assert all(p["reputation"] and p["reputation"]["dissents"] == 0 for p in honest), summary["providers"]

        # canaries are on: the marketplace ran with the dev canary key, its wallets funded like customers
        for wallet in canary_accounts(DEV_CANARY_KEY, CANARY_WALLETS):
            assert token.balance_of(wallet.address) > 0
            assert contracts.client.w3.eth.get_balance(wallet.address) > 0

        unplaceable = [t for t in summary["tasks"] if not t["placeable"]]
        assert len(unplaceable) == 1 and unplaceable[0]["unplaced_reason"], unplaceable
        assert "not placed" in output and unplaceable[0]["unplaced_reason"][:30] in " ".join(output.split())

        # the escrow holds exactly what it still owes (all credits were claimed at the end)
        assert token.balance_of(escrow.address) == escrow.total_locked() + escrow.total_claimable()
        assert escrow.total_claimable() == 0


def test_a_second_up_while_one_runs_exits_2(tmp_path: Path) -> None:
    state = tmp_path / "up"
    state.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (state / "up.lock").write_text(f"{holder.pid}\n")
        result = subprocess.run([sys.executable, "-m", "hashgrid.cli", "up", "--runtime", "wasm"], cwd=ROOT,
                                env=_env(tmp_path), capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "already running" in " ".join((result.stdout + result.stderr).split())
        assert (state / "up.lock").read_text().split()[0] == str(holder.pid)  # not stolen
    finally:
        holder.kill()
        holder.wait()
