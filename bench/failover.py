"""Failover: how long a task waits when a provider daemon is SIGKILLed mid-task.

The real pieces on loopback: anvil (automine) with the contracts, the marketplace under uvicorn with its jobs
in-process (shipped settings), and four `hashgrid provider run --marketplace` daemons running docker tasks
(the busybox sample image). Each round posts a k = 2, q = 2 task with the default `max_replicas` (k + 1),
waits until both replicas run, SIGKILLs one of the two daemons, and records kill → replacement assigned (the
marketplace's `replica_replacement.replaced_at`) and kill → task settled (seen by the customer's poll); the
killed daemon is then restarted on its state dir (it sweeps what its predecessor left) before the next round.
Target: kill → replacement assigned at most 30 s. `python -m bench.failover [--kills N]` (default 20).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.assignment import _utc_seconds, percentile

ROOT = Path(__file__).resolve().parent.parent
TARGET_REPLACEMENT_S = 30.0
PRICE = 10**16
TASK_S = 5  # each run logs for about this long: long enough to be killed mid-task
SCRIPT = (f"i=0; while [ $i -lt {TASK_S * 4} ]; do echo line $i; i=$((i+1)); sleep 0.25; done; "
          "echo ok > /out/r.txt")


def _wait(condition: Any, timeout: float, what: str) -> Any:
    """Poll a condition of another process (no readiness signal exists to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class Daemon:
    """One provider daemon process, restartable on its state dir."""

    def __init__(self, account: Any, state: Path, command: list[str], env: dict[str, str]) -> None:
        self.account, self.state, self.command, self.env = account, state, command, env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        with (self.state / "daemon.log").open("ab") as sink:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=sink,
                                            stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def run(*, kills: int = 20, console: Console | None = None) -> dict[str, Any]:
    """Measure; returns the latencies (s) of each kill."""
    from hashgrid.chain.client import ChainClient
    from hashgrid.chain.compile import compile_contracts
    from hashgrid.chain.contracts import Contracts
    from hashgrid.config import DEV_CHAIN_ID
    from hashgrid.signing import HashgridAuth
    from provider.config import Offer, ProviderConfig, write_config
    from provider.policy import Policy
    from scripts.deploy import DeployParams, deploy
    from scripts.devnet import GRID, DevAccounts, fund, post, stake_provider
    from scripts.localnet import Anvil, free_port

    console = console or Console()
    image = json.loads((ROOT / "build/images.json").read_text())["hashgrid/busybox:1"]
    state = Path(tempfile.mkdtemp(prefix="hashgrid-bench-failover-"))
    accounts = DevAccounts.from_keys()
    replaced: list[float] = []
    settled: list[float] = []
    with Anvil() as anvil:
        chain = ChainClient(anvil.url, tx_timeout=30.0)
        deployment = deploy(chain, DeployParams(), deployer=accounts.deployer, compiled=compile_contracts())
        contracts = Contracts.load(chain, deployment)
        fund(contracts, accounts)
        for account in accounts.providers:
            stake_provider(contracts, account, 1_000 * GRID)
        deployment_file = deployment.save(state / "deployment.json")
        config = state / "provider.toml"
        write_config(ProviderConfig(offer=Offer(cores=2), policy=Policy(runtimes=["docker"],
                                                                       allowed_images=[image])), config)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        db_path = state / "marketplace.sqlite"
        base = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
        env = dict(base, HASHGRID_STATE_DIR=str(state / "market"), HASHGRID_RUN_JOBS="true",
                   HASHGRID_DATABASE_URL=f"sqlite:///{db_path}", HASHGRID_RPC_URL=anvil.url,
                   HASHGRID_DEPLOYMENT_FILE=str(deployment_file), HASHGRID_CHAIN_ID=str(DEV_CHAIN_ID),
                   HASHGRID_MARKETPLACE_URL=url)
        server_log = state / "server.log"
        with server_log.open("ab") as sink:
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "marketplace.api.app:app_from_env", "--host",
                 "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        daemons = []
        for i, account in enumerate(accounts.providers):
            home = state / f"provider{i}"
            daemons.append(Daemon(account, home, [
                sys.executable, "-m", "hashgrid.cli", "provider", "run", "--state-dir", str(home), "--rpc",
                anvil.url, "--deployment", str(deployment_file), "--content-dir", str(home / "content"),
                "--marketplace", url, "--config", str(config)], dict(
                base, HASHGRID_PROVIDER_KEY="0x" + account.key.hex().removeprefix("0x"),
                HASHGRID_CHAIN_ID=str(DEV_CHAIN_ID))))
        customer = httpx.Client(base_url=url, auth=HashgridAuth(accounts.customer, chain_id=DEV_CHAIN_ID),
                                timeout=30)
        try:
            _wait(lambda: _healthy(url), 90, "the marketplace")
            for daemon in daemons:
                daemon.start()
            _wait(lambda: all(_online(url, d.account.address) for d in daemons), 120, "providers online")
            for round_no in range(kills):
                spec = {"version": 1, "name": f"failover {round_no}", "runtime": "docker", "image": image,
                        "command": ["sh", "-c", SCRIPT], "outputs": ["r.txt"],
                        "resources": {"cpus": 0.5, "memory_mb": 64, "disk_mb": 4, "timeout_s": 120},
                        "replicas": 2, "quorum": 2, "max_price_per_replica": str(PRICE), "deadline_s": 3600}
                registration = customer.post("/tasks", json=spec).json()
                task_id, _ = post(contracts, accounts.customer,
                                  bytes.fromhex(registration["spec_hash"].removeprefix("0x")), replicas=2,
                                  quorum=2, max_price=PRICE, max_replicas=int(registration["max_replicas"]))

                def running(task_id: int = task_id) -> list[str] | None:
                    replicas = customer.get(f"/tasks/{task_id}").json().get("replica_list") or []
                    found = [r["provider"] for r in replicas if r["status"] == "running"]
                    return found if len(found) == 2 else None

                victim_address = _wait(running, 120, f"task {task_id} running")[round_no % 2]
                victim = next(d for d in daemons if d.account.address.lower() == victim_address)
                killed_at = time.time()
                victim.kill()
                at = _wait(lambda: _replaced_at(db_path, task_id, victim_address), 180,  # noqa: B023
                           f"task {task_id}'s replacement")
                replaced.append(at - killed_at)
                _wait(lambda: customer.get(f"/tasks/{task_id}").json().get("status") == "settled",  # noqa: B023
                      240, f"task {task_id} settled")
                settled.append(time.time() - killed_at)
                console.print(f"kill {round_no + 1}/{kills}: task {task_id}, replacement after "
                              f"{replaced[-1]:.1f}s, settled after {settled[-1]:.1f}s")
                victim.start()
                _wait(lambda: _online(url, victim.account.address), 120, "the restarted provider online")  # noqa: B023
        finally:
            customer.close()
            for daemon in daemons:
                daemon.stop()
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    return {"kills": kills, "replaced": replaced, "settled": settled, "load": os.getloadavg()}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _online(url: str, address: str) -> bool:
    try:
        response = httpx.get(f"{url}/providers/{address.lower()}/info", timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and bool(response.json()["provider"]["online"])


def _replaced_at(db_path: Path, task_id: int, provider: str) -> float | None:
    with sqlite3.connect(db_path, timeout=30) as db:
        row = db.execute("SELECT replaced_at FROM replica_replacement WHERE task_id = ? AND provider = ? AND "
                         "replaced_by IS NOT NULL", (task_id, provider)).fetchone()
    return None if row is None or row[0] is None else _utc_seconds(str(row[0]))


def table(result: dict[str, Any]) -> Table:
    out = Table(title=f"failover: {result['kills']} daemons SIGKILLed mid-task (k = 2, q = 2, shipped "
                      f"settings; target kill → replacement ≤ {TARGET_REPLACEMENT_S:.0f} s)")
    for column in ("path", "n", "p50 s", "p99 s", "max s"):
        out.add_column(column, justify="left" if column == "path" else "right")
    for name, key in (("kill → replacement assigned", "replaced"), ("kill → task settled", "settled")):
        values = result[key]
        if values:
            out.add_row(name, str(len(values)), f"{statistics.median(values):.1f}",
                        f"{percentile(values, 0.99):.1f}", f"{max(values):.1f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    console = Console()
    result = run(kills=args.kills, console=console)
    console.print(table(result))
    console.print(f"load average at the end: {' '.join(f'{x:.1f}' for x in result['load'])}")
    worst = max(result["replaced"], default=0.0)
    console.print(f"target kill → replacement ≤ {TARGET_REPLACEMENT_S:.0f} s: "
                  + ("met" if worst <= TARGET_REPLACEMENT_S else f"MISSED (max {worst:.1f} s)"))


if __name__ == "__main__":
    main()
