"""Post-to-assignment latency: from a task's postTask receipt on anvil to a provider's long-poll returning it.

The real pieces on loopback: anvil (automine), the contracts deployed and four providers staked, the
marketplace under uvicorn with its jobs in-process (indexer, matching) and the chain oracles, the providers
registered and heartbeating through the signed API as the daemon does (provider.marketplace_client), each
long-polling GET /providers/{address}/assignments on a thread of its own. Tasks are posted one at a time at
random gaps (so a post lands at a random phase of every polling interval). `python -m bench.api` runs this
after the ingest benchmark; `python -m bench.assignment` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 500.0
PRICE = 10**15  # wei per replica: the providers ask less, so every task is placeable
# (label, marketplace env): the shipped settings, then a diagnostic with the settle job paced out, to show
# what the settle job's rounds (every second, over every open task) cost the assign lane on a shared CPU
CONFIGS: list[tuple[str, dict[str, str]]] = [
    ("shipped settings", {}),
    (
        "settle job paced out (HASHGRID_SETTLE_INTERVAL_S=3600, diagnostic only)",
        {"HASHGRID_SETTLE_INTERVAL_S": "3600"},
    ),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _utc_seconds(text: str) -> float:
    """A database or API timestamp (naive means UTC) as unix seconds."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


HEARTBEAT_S = 3.0  # the daemon's heartbeat interval (the marketplace's TTL is 10 s)


class Poller(threading.Thread):
    """One provider's long-poll loop (what the daemon's assignment feed does): record, then ack."""

    def __init__(self, client: Any, seen: dict[tuple[int, str], tuple[float, str]], stop: threading.Event):
        super().__init__(name=f"poll-{client.address[:8]}", daemon=True)
        self.client, self.seen, self.stop = client, seen, stop
        self.error: BaseException | None = None

    def run(self) -> None:
        beat = time.monotonic()
        try:
            while not self.stop.is_set():
                if time.monotonic() - beat >= HEARTBEAT_S:  # as the daemon does: online within the TTL
                    self.client.heartbeat(free_cpus=4096, free_memory_mb=1 << 30, free_disk_mb=1 << 30)
                    beat = time.monotonic()
                for item in self.client.assignments(wait=1.0):
                    key = (int(item["task_id"]), self.client.address)
                    self.seen.setdefault(key, (time.time(), str(item["assigned_at"])))
                    self.client.ack(int(item["task_id"]))
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def _start_marketplace(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as sink:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "marketplace.api.app:app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log_path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the marketplace exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling a subprocess's port: there is no readiness signal to wait on
    raise RuntimeError("the marketplace did not become healthy")


def run(
    *,
    tasks: int = 200,
    gap_s: tuple[float, float] = (0.05, 0.25),
    env_overrides: dict[str, str] | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Measure; returns the latencies (ms) and the configuration they were measured with."""
    from eth_account.signers.local import LocalAccount

    from hashgrid.chain.client import ChainClient
    from hashgrid.chain.compile import compile_contracts
    from hashgrid.chain.contracts import Contracts, TaskTerms
    from hashgrid.config import DEV_CHAIN_ID
    from provider.marketplace_client import MarketplaceClient
    from scripts.deploy import DeployParams, deploy
    from scripts.devnet import GRID, DevAccounts, fund, stake_provider
    from scripts.localnet import Anvil, free_port

    console = console or Console()
    state = Path(tempfile.mkdtemp(prefix="hashgrid-bench-assign-"))
    accounts = DevAccounts.from_keys()
    rng = random.Random(7)
    with Anvil() as anvil:
        chain = ChainClient(anvil.url, tx_timeout=30.0)
        console.print(
            f"anvil at {anvil.url}: deploying, funding, staking {len(accounts.providers)} providers"
        )
        deployment = deploy(chain, DeployParams(), deployer=accounts.deployer, compiled=compile_contracts())
        contracts = Contracts.load(chain, deployment)
        fund(contracts, accounts)
        for account in accounts.providers:
            stake_provider(contracts, account, 1_000 * GRID)
        deployment_file = deployment.save(state / "deployment.json")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        db_path = state / "marketplace.sqlite"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
        env.update(
            HASHGRID_STATE_DIR=str(state / "market"),
            HASHGRID_DATABASE_URL=f"sqlite:///{db_path}",
            HASHGRID_RPC_URL=anvil.url,
            HASHGRID_DEPLOYMENT_FILE=str(deployment_file),
            HASHGRID_CHAIN_ID=str(DEV_CHAIN_ID),
            HASHGRID_MARKETPLACE_URL=url,
            HASHGRID_RUN_JOBS="true",
            PYTHONPATH=str(ROOT),
        )
        env.update(env_overrides or {})
        log_path = state / "server.log"
        server = _start_marketplace(env, port, log_path)
        stop = threading.Event()
        pollers: list[Poller] = []
        clients: list[Any] = []
        try:
            _wait_healthy(url, server, log_path)
            for account in accounts.providers:
                client = MarketplaceClient(
                    url, "0x" + account.key.hex().removeprefix("0x"), chain_id=DEV_CHAIN_ID, timeout=30
                )
                clients.append(client)
                client.register(
                    capabilities={"runtimes": ["wasm"], "cpu": {"arch": "x86_64", "cores": 4096}},
                    capabilities_hash=None,
                    prices={"fixed": "1"},
                    policy={"runtimes": ["wasm"]},
                    offer={"cores": 4096, "memory_mb": 1 << 30, "disk_mb": 1 << 30},
                )
                client.heartbeat(free_cpus=4096, free_memory_mb=1 << 30, free_disk_mb=1 << 30)
            customer: LocalAccount = accounts.customer
            spec = {
                "version": 1,
                "name": "bench-assign",
                "runtime": "wasm",
                "module": "ab" * 32,
                "replicas": 3,
                "quorum": 2,
                "max_price_per_replica": str(PRICE),
                "deadline_s": 3600,
            }
            registered = (
                httpx.post(
                    f"{url}/tasks",
                    content=json.dumps(spec).encode(),
                    headers={"content-type": "application/json"},
                    auth=_auth(customer, DEV_CHAIN_ID),
                    timeout=30,
                )
                .raise_for_status()
                .json()
            )
            spec_hash = bytes.fromhex(registered["spec_hash"].removeprefix("0x"))
            contracts.token.approve(contracts.escrow.address, 10**6 * GRID, sender=customer)
            seen: dict[tuple[int, str], tuple[float, str]] = {}
            pollers = [Poller(client, seen, stop) for client in clients]
            for poller in pollers:
                poller.start()
            posted: dict[int, tuple[float, float]] = {}  # task id -> (sent, mined)
            console.print(
                f"posting {tasks} tasks (3 replicas each) at random gaps of {gap_s[0]}-{gap_s[1]} s"
            )
            deadline = chain.timestamp() + 7 * 24 * 3600
            for _ in range(tasks):
                time.sleep(rng.uniform(*gap_s))  # the load's arrival process, not synchronisation
                terms = TaskTerms(
                    spec_hash=spec_hash,
                    replicas=3,
                    quorum=2,
                    max_replicas=3,
                    max_price_per_replica=PRICE,
                    deadline=deadline,
                )
                sent = time.time()
                receipt = contracts.escrow.post_task(terms, sender=customer)
                posted[contracts.escrow.task_id_of(receipt)] = (sent, time.time())
                if len(seen) == 0 and len(posted) > 20:
                    raise RuntimeError(f"nothing assigned after 20 posts:\n{log_path.read_text()[-3000:]}")
            wait_until = time.monotonic() + 60
            while time.monotonic() < wait_until and len(seen) < 3 * len(posted):
                if any(p.error for p in pollers):
                    break
                time.sleep(0.05)  # waiting for the pollers' threads to record the last assignments
        finally:
            stop.set()
            for poller in pollers:
                poller.join(timeout=10)
            for client in clients:
                client.close()
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    errors = [p.error for p in pollers if p.error]
    if errors:
        raise RuntimeError(f"a provider's long-poll failed: {errors[0]!r}")
    return _summarise(posted, seen, db_path, env)


def _auth(account: Any, chain_id: int) -> httpx.Auth:
    from hashgrid.signing import HashgridAuth

    return HashgridAuth(account, chain_id=chain_id)


def _summarise(
    posted: dict[int, tuple[float, float]],
    seen: dict[tuple[int, str], tuple[float, str]],
    db_path: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    by_task: dict[int, list[tuple[float, str]]] = {}
    for (task_id, _provider), value in seen.items():
        by_task.setdefault(task_id, []).append(value)
    with sqlite3.connect(db_path) as db:
        indexed = {int(i): _utc_seconds(c) for i, c in db.execute("SELECT task_id, created_at FROM task")}
    first, last, chain_ms, to_index, to_assign, to_seen = [], [], [], [], [], []
    for task_id, (sent, mined) in posted.items():
        chain_ms.append(1000 * (mined - sent))
        views = by_task.get(task_id, [])
        if not views:
            continue
        seen_first = min(t for t, _ in views)
        first.append(1000 * (seen_first - mined))
        if len(views) == 3:
            last.append(1000 * (max(t for t, _ in views) - mined))
        assigned = min(_utc_seconds(a) for _, a in views)
        if task_id in indexed:
            to_index.append(1000 * (indexed[task_id] - mined))
            to_assign.append(1000 * (assigned - indexed[task_id]))
        to_seen.append(1000 * (seen_first - assigned))
    keys = (
        "HASHGRID_INDEX_INTERVAL_S",
        "HASHGRID_MATCHING_INTERVAL_S",
        "HASHGRID_POLL_INTERVAL_S",
        "HASHGRID_SETTLE_INTERVAL_S",
    )
    return {
        "tasks": len(posted),
        "assigned": len(first),
        "complete": len(last),
        "first": first,
        "last": last,
        "chain": chain_ms,
        "to_index": to_index,
        "to_assign": to_assign,
        "to_seen": to_seen,
        "config": {k: env[k] for k in keys if k in env},
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, int, float, float, float]]:
    """(what, samples, p50, p99, max) rows for the table and the doc."""
    names = [
        ("baseline: postTask sent → receipt (anvil automine)", "chain"),
        ("post mined → first provider's long-poll returns it", "first"),
        ("post mined → all 3 replicas' providers have it", "last"),
        ("  of which: post mined → task indexed", "to_index"),
        ("  of which: indexed → assigned on chain (matching round)", "to_assign"),
        ("  of which: assigned → first long-poll returns", "to_seen"),
    ]
    out = []
    for name, key in names:
        values = result[key]
        if values:
            out.append((name, len(values), statistics.median(values), percentile(values, 0.99), max(values)))
    return out


def table(result: dict[str, Any]) -> Table:
    config = ", ".join(f"{k.removeprefix('HASHGRID_').lower()}={v}" for k, v in result["config"].items())
    out = Table(title=f"post → assignment, {result['tasks']} tasks ({config or 'shipped settings'})")
    for column in ("path", "n", "p50 ms", "p99 ms", "max ms"):
        out.add_column(column, justify="left" if column == "path" else "right")
    for name, n, p50, p99, worst in rows(result):
        out.add_row(name, str(n), f"{p50:.0f}", f"{p99:.0f}", f"{worst:.0f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--env", action="append", default=[], help="HASHGRID_X=value for the marketplace")
    args = parser.parse_args()
    console = Console()
    overrides = dict(item.split("=", 1) for item in args.env)
    result = run(tasks=args.tasks, env_overrides=overrides, console=console)
    console.print(table(result))


if __name__ == "__main__":
    main()
