"""The explorer rebuilds a task's and its providers' history from chain events alone."""

from __future__ import annotations

import json
from pathlib import Path

from eth_utils import keccak
from typer.testing import CliRunner

from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from hashgrid.explorer import Explorer
from scripts import explorer as explorer_cli
from scripts.devnet import GRID, DevAccounts, ReplicaPlan, play_task, spec_hash_of
from tests.conftest import PROVIDER_STAKE

PRICE = 10 * GRID
GOOD, BAD = keccak(text="good"), keccak(text="bad")


def _settled_task(contracts: Contracts, dev_accounts: DevAccounts) -> int:
    p1, p2, p3 = dev_accounts.providers[:3]
    plans = [ReplicaPlan(p1, GOOD, 6 * GRID), ReplicaPlan(p2, GOOD, 9 * GRID), ReplicaPlan(p3, BAD, 9 * GRID)]
    run = play_task(
        contracts,
        customer=dev_accounts.customer,
        operator=dev_accounts.deployer,
        spec_hash=spec_hash_of("explored"),
        plans=plans,
        quorum=2,
        max_price=PRICE,
    )
    return run.task_id


def test_task_and_provider_history(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    task_id = _settled_task(contracts, dev_accounts)
    p1, p2, p3, idle = dev_accounts.providers
    explorer = Explorer(contracts)

    h = explorer.task_history(task_id)
    assert h.state == "Settled" and h.spec_hash == "0x" + spec_hash_of("explored").hex()
    assert h.customer == dev_accounts.customer.address and (h.replicas, h.quorum) == (3, 2)
    assert h.accepted_result == "0x" + GOOD.hex() and h.agreeing == 2
    assert [r.provider for r in h.replica_views] == [p1.address, p2.address, p3.address]
    assert [(r.replica_index, r.round) for r in h.replica_views] == [(0, 1), (1, 1), (2, 1)]
    assert all(0 < r.commit_deadline < r.reveal_deadline for r in h.replica_views)
    assert [r.revealed_hash for r in h.replica_views] == ["0x" + x.hex() for x in (GOOD, GOOD, BAD)]
    assert all(r.commitment and r.commitment.startswith("0x") for r in h.replica_views)
    assert [r.outcome for r in h.replica_views] == ["Agreed", "Agreed", "Dissented"]
    assert [r.paid for r in h.replica_views] == [6 * GRID, 9 * GRID, 0]
    slashed = PROVIDER_STAKE // 2
    assert [r.slashed for r in h.replica_views] == [0, 0, slashed]
    fee = 15 * GRID * 200 // 10_000
    assert (h.paid, h.fee, h.refunded) == (15 * GRID, fee, h.escrowed - 15 * GRID - fee)
    assert [(s.provider, s.amount, s.recipient) for s in h.slashes] == [
        (p3.address, slashed, contracts.timelock.address)  # the treasury, never the customer
    ]

    honest = explorer.provider_history(p2.address)
    assert honest.registered and honest.stake == PROVIDER_STAKE and honest.staked_in == PROVIDER_STAKE
    assert honest.rewards == 9 * GRID and honest.slashed == 0
    assert (honest.claimed, honest.claimable) == (9 * GRID, 0)  # play_task claimed every credit
    assert [(t.task_id, t.outcome, t.paid) for t in honest.tasks] == [(task_id, "Agreed", 9 * GRID)]

    liar = explorer.provider_history(p3.address.lower())
    assert liar.stake == PROVIDER_STAKE - slashed and liar.slashed == slashed and liar.rewards == 0
    assert [(t.task_id, t.outcome, t.slashed) for t in liar.tasks] == [(task_id, "Dissented", slashed)]
    assert explorer.provider_history(idle.address).tasks == []

    stats = explorer.network_stats()
    assert stats.tasks == 1 and stats.tasks_by_state == {"Settled": 1} and stats.providers == 4
    assert (stats.paid_to_providers, stats.protocol_fees, stats.slashed) == (15 * GRID, fee, slashed)
    assert stats.total_locked == 0 and stats.total_staked == 4 * PROVIDER_STAKE - slashed
    assert stats.claimed == h.escrowed and stats.total_claimable == 0


def test_cli_prints_json_and_tables(
    contracts: Contracts, dev_accounts: DevAccounts, deployment: Deployment, tmp_path: Path
) -> None:
    task_id = _settled_task(contracts, dev_accounts)
    path = deployment.save(tmp_path / "deployment.json")
    runner = CliRunner()
    as_json = runner.invoke(explorer_cli.app, ["task", str(task_id), "--deployment", str(path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["state"] == "Settled"
    table = runner.invoke(
        explorer_cli.app, ["provider", dev_accounts.providers[2].address, "--deployment", str(path)]
    )
    assert table.exit_code == 0 and "Dissented" in table.output
    missing = runner.invoke(explorer_cli.app, ["task", "999", "--deployment", str(path)])
    assert missing.exit_code == 1 and "no task 999 on chain" in missing.output
