"""`hashgrid provider run` against a real anvil and the real wasm runtime, one subprocess per provider key.

Three daemons run a k=3 task to settlement; a daemon killed with SIGKILL after its journal shows the task
executed (its commit transaction still in the mempool) resumes after a restart with exactly one commit and one
reveal on chain; a task the policy refuses is journaled with the reason and never committed; a shutdown
cancels a run past the grace period and keeps it received. Synchronisation: polling journals and the chain
under deadlines; block production is driven with anvil RPCs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts, ReplicaReport, ReplicaState, TaskState
from hashgrid.chain.deployment import Deployment
from hashgrid.content import ContentStore
from hashgrid.spec import TaskSpec, canonical_spec, parse_spec, spec_hash
from provider.config import ProviderConfig, write_config
from provider.daemon import FAULT_EXIT_CODE, usage_report_signer
from provider.policy import Policy
from scripts.devnet import GRID, DevAccounts, post
from scripts.localnet import Anvil
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
MAX_PRICE = GRID // 1000
DATA = b"the quick brown fox\njumps over the lazy dog\nthe end\n"


class DaemonProcess:
    """`hashgrid provider run` in a subprocess with its own state dir and key; its log goes to a file."""

    def __init__(self, *, account: LocalAccount, state: Path, rpc: str, deployment: Path, content: Path,
                 extra: tuple[str, ...] = ()) -> None:
        self.account = account
        self.state = state
        self.log_path = state / "daemon.log"
        state.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HASHGRID_PROVIDER_KEY="0x" + account.key.hex().removeprefix("0x"),
                   COLUMNS="200")
        command = [sys.executable, "-m", "hashgrid.cli", "provider", "run", "--state-dir", str(state),
                   "--rpc", rpc, "--deployment", str(deployment), "--content-dir", str(content),
                   "--poll-interval", "0.2", "--grace", "20", *extra]
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)

    @property
    def journal_file(self) -> Path:
        return self.state / "provider" / "journal.sqlite"

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        if not self.journal_file.exists():
            return []
        db = sqlite3.connect(f"file:{self.journal_file}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # the daemon has not created its tables yet
            return []
        finally:
            db.close()

    def task(self, task_id: int) -> sqlite3.Row | None:
        rows = self._query("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return rows[0] if rows else None

    def phase(self, task_id: int) -> str | None:
        row = self.task(task_id)
        return None if row is None else str(row["phase"])

    def polled(self) -> bool:
        """The daemon is registered and has read the feed at least once (its cursor is saved)."""
        return bool(self._query("SELECT value FROM meta WHERE key LIKE 'feed.chain.%'"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon did not exit within {timeout}s; log:\n{self.log()}") from None

    def stop(self) -> int:
        """SIGTERM (graceful) and the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def launch(anvil: Anvil, deployment: Deployment, tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons for this test; any still running at the end are killed (before the chain is reverted)."""
    deployment_file = deployment.save(tmp_path / "deployment.json")
    started: list[DaemonProcess] = []

    def start(account: LocalAccount, name: str, *extra: str) -> DaemonProcess:
        daemon = DaemonProcess(account=account, state=tmp_path / name, rpc=anvil.url,
                               deployment=deployment_file, content=tmp_path / "content", extra=extra)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def upload_spec(content: Path, fields: dict[str, Any], *, replicas: int, quorum: int) -> TaskSpec:
    """Put a spec's canonical blob and its input in the shared content dir (chain-only mode: the customer
    uploads there)."""
    store = ContentStore(content)
    data_sha = store.put_bytes(DATA)
    spec = parse_spec({
        "version": 1, "name": "daemon test",
        "inputs": [{"path": "data.txt", "sha256": data_sha, "size": len(DATA)}],
        "resources": {"cpus": 1, "memory_mb": 64, "disk_mb": 4, "timeout_s": 30}, "replicas": replicas,
        "quorum": quorum, "max_price_per_replica": str(MAX_PRICE), "deadline_s": 3600, **fields,
    })
    assert store.put_bytes(canonical_spec(spec)) == spec_hash(spec).hex()
    return spec


def wasm_spec(content: Path, module: Path, *, replicas: int, quorum: int, network: bool = False,
              command: tuple[str, ...] = ("wordfreq.wasm", "/in/data.txt"), timeout_s: int = 30) -> TaskSpec:
    """The word-frequency wasm spec (or another command of another module), module in the content dir too."""
    module_sha = ContentStore(content).put_file(module)
    resources = {"cpus": 1, "memory_mb": 64, "disk_mb": 4, "timeout_s": timeout_s}
    return upload_spec(content, {"runtime": "wasm", "module": module_sha, "command": list(command),
                                 "outputs": ["result.txt"], "network": network, "resources": resources},
                       replicas=replicas, quorum=quorum)


def post_and_assign(contracts: Contracts, accounts: DevAccounts, spec: TaskSpec,
                    providers: list[LocalAccount]) -> int:
    task_id, _ = post(contracts, accounts.customer, spec_hash(spec), replicas=spec.replicas,
                      quorum=spec.quorum, max_price=MAX_PRICE)
    contracts.escrow.assign(task_id, [p.address for p in providers], sender=accounts.deployer)
    return task_id


def finalize(contracts: Contracts, accounts: DevAccounts, task_id: int,
             payments: dict[str, int]) -> list[ReplicaReport]:
    """The settler's v2 finalize: reports rebuilt from TaskAssigned / ResultRevealed events (sorted)."""
    reports = contracts.escrow.build_reports(task_id, payments)
    contracts.escrow.finalize(task_id, reports, sender=accounts.deployer)
    return reports


def provider_events(contracts: Contracts, task_id: int, name: str, provider: str) -> int:
    return len(contracts.escrow.events(0, "latest", names=[name], first_indexed=task_id, provider=provider))


def test_three_daemons_run_a_task_to_settlement(launch: Callable[..., DaemonProcess], contracts: Contracts,
                                                 dev_accounts: DevAccounts, wasm_modules: dict[str, Path],
                                                 tmp_path: Path) -> None:
    spec = wasm_spec(tmp_path / "content", wasm_modules["wordfreq"], replicas=3, quorum=2)
    providers = list(dev_accounts.providers[:3])
    task_id = post_and_assign(contracts, dev_accounts, spec, providers)
    # the first daemon withdraws its escrow credits by itself every second
    daemons = [launch(p, f"provider{i}", *(["--claim-every", "1"] if i == 0 else []))
               for i, p in enumerate(providers)]

    def settled_or_exited(daemon: DaemonProcess) -> Callable[[], bool]:
        return lambda: daemon.phase(task_id) == "revealed" or daemon.process.poll() is not None

    for daemon in daemons:
        wait_for(settled_or_exited(daemon), timeout=120,
                 what=f"task {task_id} revealed by {daemon.account.address}")
        assert daemon.phase(task_id) == "revealed", daemon.log()
    rows = [daemon.task(task_id) for daemon in daemons]
    hashes = {row["result_hash"] for row in rows if row is not None}
    assert len(hashes) == 1, hashes
    result_hash = bytes.fromhex(hashes.pop())

    store = ContentStore(tmp_path / "content")
    for daemon, row in zip(daemons, rows, strict=True):
        assert row is not None and row["commit_tx"] and row["reveal_tx"]
        report = json.loads(store.get_bytes(row["report_sha256"]))
        assert usage_report_signer(report) == daemon.account.address.lower()
        assert report["report"]["result_hash"] == "0x" + result_hash.hex()
        assert provider_events(contracts, task_id, "ResultCommitted", daemon.account.address) == 1
        assert Path(row["log_path"]).exists()

    wallet = contracts.token.balance_of(daemons[0].account.address)
    finalize(contracts, dev_accounts, task_id, {d.account.address: MAX_PRICE for d in daemons})
    assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED
    assert contracts.escrow.result_of(task_id) == result_hash
    assert all(contracts.escrow.claimable(d.account.address) == MAX_PRICE for d in daemons[1:])
    wait_for(lambda: contracts.escrow.claimable(daemons[0].account.address) == 0, timeout=30,
             what="the first daemon claiming its credit")
    assert contracts.token.balance_of(daemons[0].account.address) - wallet == MAX_PRICE
    # the daemon logs the claim after its receipt is back, which can be after the chain shows it
    wait_for(lambda: "claimed" in daemons[0].log(), timeout=30, what="the first daemon logging its claim")
    # a log written to a file keeps each record on one line: the claim's transaction id is whole
    claim_line = next(line for line in daemons[0].log().splitlines() if "claimed" in line)
    assert re.search(r"\(tx (0x)?[0-9a-f]{64}\)", claim_line), claim_line

    for daemon in daemons:
        assert daemon.stop() == 0, daemon.log()
        assert "daemon stopped" in daemon.log()


def _pending_transactions(chain: ChainClient) -> int:
    status = chain.rpc("txpool_status")
    return int(status["pending"], 16) if isinstance(status["pending"], str) else int(status["pending"])


def test_daemon_killed_after_executing_resumes_without_double_commit(
        launch: Callable[..., DaemonProcess], contracts: Contracts, chain: ChainClient,
        dev_accounts: DevAccounts, wasm_modules: dict[str, Path], tmp_path: Path) -> None:
    spec = wasm_spec(tmp_path / "content", wasm_modules["wordfreq"], replicas=1, quorum=1)
    provider = dev_accounts.providers[0]
    task_id, _ = post(contracts, dev_accounts.customer, spec_hash(spec), replicas=1, quorum=1,
                      max_price=MAX_PRICE)
    daemon = launch(provider, "provider")
    wait_for(lambda: daemon.polled() or daemon.process.poll() is not None, timeout=60, what="daemon ready")
    assert daemon.process.poll() is None, daemon.log()

    # From here blocks are mined by hand: the daemon's commit will sit in the mempool when it is killed.
    chain.rpc("anvil_setAutomine", [False])
    assigner = threading.Thread(target=contracts.escrow.assign,
                                args=(task_id, [provider.address]), kwargs={"sender": dev_accounts.deployer})
    assigner.start()
    wait_for(lambda: _pending_transactions(chain) == 1, timeout=30, what="the assign transaction")
    chain.rpc("evm_mine")
    assigner.join(timeout=30)

    wait_for(lambda: daemon.phase(task_id) == "executed" and _pending_transactions(chain) == 1, timeout=60,
             what="task executed and its commit sent")
    daemon.kill()
    assert daemon.phase(task_id) == "executed"
    chain.rpc("evm_mine")  # the commit lands; the journal never heard of it
    chain.rpc("anvil_setAutomine", [True])
    assert provider_events(contracts, task_id, "ResultCommitted", provider.address) == 1

    restarted = launch(provider, "provider", "--once")
    assert restarted.wait(120) == 0, restarted.log()
    row = restarted.task(task_id)
    assert row is not None and row["phase"] == "revealed", restarted.log()
    assert "already committed on chain" in restarted.log()
    assert provider_events(contracts, task_id, "ResultCommitted", provider.address) == 1
    assert provider_events(contracts, task_id, "ResultRevealed", provider.address) == 1

    finalize(contracts, dev_accounts, task_id, {provider.address: MAX_PRICE})
    task = contracts.escrow.get_task(task_id)
    assert task.state == TaskState.SETTLED
    assert contracts.escrow.result_of(task_id) == bytes.fromhex(row["result_hash"])


def test_crash_after_commit_fault_then_restart_reveals_once(
        launch: Callable[..., DaemonProcess], contracts: Contracts, dev_accounts: DevAccounts,
        wasm_modules: dict[str, Path], tmp_path: Path) -> None:
    spec = wasm_spec(tmp_path / "content", wasm_modules["wordfreq"], replicas=1, quorum=1)
    provider = dev_accounts.providers[1]
    task_id = post_and_assign(contracts, dev_accounts, spec, [provider])
    crashing = launch(provider, "provider", "--once", "--fault", "crash-after-commit")
    assert crashing.wait(120) == FAULT_EXIT_CODE, crashing.log()
    assert crashing.phase(task_id) == "executed"

    restarted = launch(provider, "provider", "--once")
    assert restarted.wait(120) == 0, restarted.log()
    assert restarted.phase(task_id) == "revealed", restarted.log()
    assert provider_events(contracts, task_id, "ResultCommitted", provider.address) == 1
    assert provider_events(contracts, task_id, "ResultRevealed", provider.address) == 1


def test_policy_refusal_is_journaled_and_never_committed(
        launch: Callable[..., DaemonProcess], contracts: Contracts, dev_accounts: DevAccounts,
        wasm_modules: dict[str, Path], tmp_path: Path) -> None:
    spec = wasm_spec(tmp_path / "content", wasm_modules["wordfreq"], replicas=1, quorum=1, network=True)
    provider = dev_accounts.providers[2]
    task_id = post_and_assign(contracts, dev_accounts, spec, [provider])
    daemon = launch(provider, "provider", "--once")
    assert daemon.wait(120) == 0, daemon.log()
    row = daemon.task(task_id)
    assert row is not None and row["phase"] == "refused", daemon.log()
    assert "network" in row["reason"]
    assert provider_events(contracts, task_id, "ResultCommitted", provider.address) == 0



def test_shutdown_cancels_a_run_past_the_grace_period_and_keeps_it_received(
        launch: Callable[..., DaemonProcess], contracts: Contracts, dev_accounts: DevAccounts,
        wasm_modules: dict[str, Path], tmp_path: Path) -> None:
    spec = wasm_spec(tmp_path / "content", wasm_modules["probe"], replicas=1, quorum=1,
                     command=("probe.wasm", "busy"), timeout_s=120)
    provider = dev_accounts.providers[3]
    task_id = post_and_assign(contracts, dev_accounts, spec, [provider])
    daemon = launch(provider, "provider", "--grace", "1")
    wait_for(lambda: daemon.phase(task_id) == "running" or daemon.process.poll() is not None, timeout=60,
             what="the busy task running")
    assert daemon.stop() == 0, daemon.log()
    row = daemon.task(task_id)
    assert row is not None and row["phase"] == "received", daemon.log()
    assert row["reason"] == "cancelled at shutdown"
    assert provider_events(contracts, task_id, "ResultCommitted", provider.address) == 0


def test_docker_task_runs_to_reveal(launch: Callable[..., DaemonProcess], contracts: Contracts,
                                    dev_accounts: DevAccounts, busybox_image: str, tmp_path: Path) -> None:
    """The docker runtime (under gVisor when the engine has runsc), with the image allowed by digest."""
    spec = upload_spec(tmp_path / "content", {
        "runtime": "docker", "image": busybox_image, "outputs": ["count.txt"],
        "command": ["sh", "-c", "wc -w < /in/data.txt > /out/count.txt"]}, replicas=1, quorum=1)
    config = tmp_path / "provider.toml"
    write_config(ProviderConfig(policy=Policy(allowed_images=[busybox_image])), config)
    provider = dev_accounts.providers[0]
    task_id = post_and_assign(contracts, dev_accounts, spec, [provider])
    daemon = launch(provider, "provider", "--once", "--config", str(config))
    assert daemon.wait(180) == 0, daemon.log()
    assert daemon.phase(task_id) == "revealed", daemon.log()
    finalize(contracts, dev_accounts, task_id, {provider.address: MAX_PRICE})
    assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED


def test_dishonest_fault_is_outvoted(launch: Callable[..., DaemonProcess], contracts: Contracts,
                                     dev_accounts: DevAccounts, wasm_modules: dict[str, Path],
                                     tmp_path: Path) -> None:
    """The test/demo fault `--fault dishonest` reveals a wrong hash; the honest quorum settles without it."""
    spec = wasm_spec(tmp_path / "content", wasm_modules["wordfreq"], replicas=3, quorum=2)
    providers = list(dev_accounts.providers[:3])
    task_id = post_and_assign(contracts, dev_accounts, spec, providers)
    daemons = [launch(p, f"provider{i}", "--once", *(["--fault", "dishonest"] if i == 2 else []))
               for i, p in enumerate(providers)]
    for daemon in daemons:  # --once exits after committing when the others have not committed yet
        assert daemon.wait(120) == 0, daemon.log()
    reruns = [launch(p, f"provider{i}", "--once") for i, p in enumerate(providers)]
    for daemon in reruns:
        assert daemon.wait(120) == 0, daemon.log()
        assert daemon.phase(task_id) == "revealed", daemon.log()
    hashes = [bytes.fromhex(daemon.task(task_id)["result_hash"]) for daemon in reruns]  # type: ignore[index]
    assert hashes[0] == hashes[1] != hashes[2]
    # billing metered all three; the reports pay only the two that revealed the accepted result
    reports = finalize(contracts, dev_accounts, task_id, {p.address: MAX_PRICE for p in providers})
    assert {r.provider: r.payment for r in reports}[providers[2].address] == 0
    task = contracts.escrow.get_task(task_id)
    assert task.state == TaskState.SETTLED and contracts.escrow.result_of(task_id) == hashes[0]
    finalized = contracts.escrow.events(0, "latest", names=["ReplicaFinalized"], first_indexed=task_id)
    outcomes = {e.args["provider"].lower(): int(e.args["outcome"]) for e in finalized}
    assert outcomes[providers[2].address.lower()] == ReplicaState.DISSENTED
