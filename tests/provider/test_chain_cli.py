"""`hashgrid provider stake | unstake | withdraw | status | earnings | claim` against a real anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eth_utils import keccak

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from scripts.devnet import GRID, DevAccounts, ReplicaPlan, play_task, spec_hash_of

ROOT = Path(__file__).resolve().parents[2]


def _provider(*args: str, chain: ChainClient, deployment: Deployment, tmp_path: Path,
              key: str | None = None) -> subprocess.CompletedProcess[str]:
    deployment_file = deployment.save(tmp_path / "deployment.json")
    env = dict(os.environ, HASHGRID_STATE_DIR=str(tmp_path / "state"), HASHGRID_RPC_URL=chain.rpc_url,
               HASHGRID_DEPLOYMENT_FILE=str(deployment_file), COLUMNS="200")
    env.pop("HASHGRID_PROVIDER_KEY", None)
    if key:
        env["HASHGRID_PROVIDER_KEY"] = key
    return subprocess.run([sys.executable, "-m", "hashgrid.cli", "provider", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


def test_stake_status_unstake_withdraw(chain: ChainClient, deployment: Deployment, contracts: Contracts,
                                       dev_accounts: DevAccounts, tmp_path: Path) -> None:
    newcomer = dev_accounts.spare[0]
    contracts.token.transfer(newcomer.address, 500 * GRID, sender=dev_accounts.deployer)
    key = newcomer.key.hex()

    staked = _provider("stake", "300GRID", chain=chain, deployment=deployment, tmp_path=tmp_path, key=key)
    assert staked.returncode == 0, staked.stderr
    assert "registered" in staked.stdout and contracts.registry.stake_of(newcomer.address) == 300 * GRID
    assert contracts.registry.operator_of(newcomer.address) == newcomer.address

    shown = _provider("status", "--json", "--address", newcomer.address, chain=chain, deployment=deployment,
                      tmp_path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["stake"] == str(300 * GRID)  # wei as a string: JSON numbers past 2**53 lose digits
    assert report["active_assignments"] == 0 and report["outcomes"] == {}

    unstaked = _provider("unstake", "100GRID", chain=chain, deployment=deployment, tmp_path=tmp_path, key=key)
    assert unstaked.returncode == 0, unstaked.stderr
    assert contracts.registry.unbonding_of(newcomer.address)[0] == 100 * GRID
    assert "UTC" in unstaked.stdout and "warning" not in unstaked.stderr  # 200 GRID left >= the minimum
    minimum = contracts.registry.min_stake()
    if 200 * GRID - minimum > 0:  # leave less than the minimum: the provider is told it is no longer eligible
        under = _provider("unstake", str(200 * GRID - minimum + 1), "--json", chain=chain,
                          deployment=deployment, tmp_path=tmp_path, key=key)
        assert under.returncode == 0, under.stderr
        assert "no longer eligible" in " ".join(under.stderr.split())
        shown = json.loads(under.stdout)
        assert shown["eligible"] is False and shown["stake"] == str(minimum - 1)

    # before the release: a revert in words, a date instead of a unix time, exit 1 (failed) as everywhere
    early = _provider("withdraw", chain=chain, deployment=deployment, tmp_path=tmp_path, key=key)
    assert early.returncode == 1
    assert "RegistryUnbondingNotReleased" in early.stderr and "releaseTime=" not in early.stderr
    assert "released at" in early.stderr and "UTC" in early.stderr


def test_stake_more_than_balance_is_a_clear_error(chain: ChainClient, deployment: Deployment,
                                                  dev_accounts: DevAccounts, tmp_path: Path) -> None:
    broke = dev_accounts.spare[1]
    failed = _provider("stake", "10GRID", chain=chain, deployment=deployment, tmp_path=tmp_path,
                       key=broke.key.hex())
    assert failed.returncode == 1 and "error" in failed.stderr  # a revert: failed, in words
    assert "holds 0 GRID but 10 GRID is needed" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1


def test_earnings_of_a_fresh_provider(chain: ChainClient, deployment: Deployment, dev_accounts: DevAccounts,
                                      tmp_path: Path) -> None:
    provider = dev_accounts.providers[0]
    shown = _provider("earnings", "--json", "--address", provider.address, chain=chain, deployment=deployment,
                      tmp_path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"address": provider.address, "entries": [], "net": "0",
                                        "claimable": "0", "claimed": "0"}


def test_earnings_then_claim_credits(chain: ChainClient, deployment: Deployment, contracts: Contracts,
                                     dev_accounts: DevAccounts, tmp_path: Path) -> None:
    """Finalize credits the agreeing provider in the escrow; `earnings` lists it (ReplicaFinalized.paid) as
    claimable, `status` shows it, and `claim` moves it to the wallet."""
    good, bad = keccak(text="good"), keccak(text="bad")
    p1, p2, p3 = dev_accounts.providers[:3]
    plans = [ReplicaPlan(p1, good, 6 * GRID), ReplicaPlan(p2, good, 7 * GRID), ReplicaPlan(p3, bad, 7 * GRID)]
    run = play_task(contracts, customer=dev_accounts.customer, operator=dev_accounts.deployer,
                    spec_hash=spec_hash_of("cli earnings"), plans=plans, quorum=2, max_price=10 * GRID,
                    claim=False)
    key = p1.key.hex()
    shown = _provider("earnings", "--json", chain=chain, deployment=deployment, tmp_path=tmp_path, key=key)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    entries = [(e["task_id"], e["kind"], e["amount"]) for e in report["entries"]]
    assert entries == [(run.task_id, "paid", str(6 * GRID))]
    assert (report["net"], report["claimable"], report["claimed"]) == (str(6 * GRID), str(6 * GRID), "0")
    status = _provider("status", "--json", chain=chain, deployment=deployment, tmp_path=tmp_path, key=key)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["claimable"] == str(6 * GRID)

    before = contracts.token.balance_of(p1.address)
    claimed = _provider("claim", chain=chain, deployment=deployment, tmp_path=tmp_path, key=key)
    assert claimed.returncode == 0, claimed.stderr
    assert "claimed 6.000000 GRID" in claimed.stdout
    assert contracts.token.balance_of(p1.address) - before == 6 * GRID
    assert contracts.escrow.claimable(p1.address) == 0
    again = _provider("claim", chain=chain, deployment=deployment, tmp_path=tmp_path, key=key)
    assert again.returncode == 0 and "nothing to claim" in again.stdout
    as_json = _provider("claim", "--json", chain=chain, deployment=deployment, tmp_path=tmp_path, key=key)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["claimed"] == "0"

    liar = _provider("earnings", "--json", "--address", p3.address, chain=chain, deployment=deployment,
                     tmp_path=tmp_path)
    entries = json.loads(liar.stdout)["entries"]  # one Slashed event: all of it to the treasury
    assert [(e["task_id"], e["kind"], e["amount"]) for e in entries] == [
        (run.task_id, "slashed", str(-500 * GRID))  # half of its 1,000 GRID stake (wei as a string)
    ]
