"""A parameter change passes through the DAO end to end (propose, vote, queue, execute, via the functions
behind `hashgrid dao`) and the next task is posted and settled under the new value."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hashgrid.chain.contracts import Contracts, ProposalState
from hashgrid.chain.deployment import Deployment
from hashgrid.errors import InvalidInput
from scripts import governance
from scripts.devnet import GRID, DevAccounts, ReplicaPlan, play_task, spec_hash_of

PRICE = 10 * GRID


def test_fee_change_end_to_end_takes_effect_on_next_task(
    contracts: Contracts, dev_accounts: DevAccounts
) -> None:
    dao, escrow, token = dev_accounts.deployer, contracts.escrow, contracts.token
    assert escrow.param("protocolFeeBps") == 200
    said: list[str] = []

    change = governance.parameter_change(contracts, "escrow.protocolFeeBps=300")
    proposal_id = governance.propose(
        contracts, [change], "raise the protocol fee to 3%", sender=dao, say=said.append
    )
    assert any("delegated" in line for line in said)  # the proposer had not delegated yet: done for it
    assert governance.status(contracts, proposal_id).state is ProposalState.PENDING

    governance.vote(contracts, "latest", "for", sender=dao, say=said.append)
    st = governance.status(contracts, proposal_id)
    assert st.state is ProposalState.ACTIVE and st.votes_for > st.quorum > 0

    governance.queue(contracts, proposal_id, sender=dao, say=said.append)
    assert governance.status(contracts, proposal_id).state is ProposalState.QUEUED
    assert escrow.param("protocolFeeBps") == 200  # not before the timelock delay

    governance.execute(contracts, proposal_id, sender=dao, say=said.append)
    assert governance.status(contracts, proposal_id).state is ProposalState.EXECUTED
    assert escrow.param("protocolFeeBps") == 300
    assert any(line.startswith("anvil: mined") for line in said)
    assert any(line.startswith("anvil: advanced time") for line in said)

    # the next task locks and pays the new fee
    assert escrow.escrow_for(3, PRICE) == 3 * PRICE * 10_300 // 10_000
    treasury_before = token.balance_of(contracts.timelock.address)
    plans = [ReplicaPlan(p, b"\x11" * 32, payment=5 * GRID) for p in dev_accounts.providers[:3]]
    run = play_task(
        contracts,
        customer=dev_accounts.customer,
        operator=dao,
        spec_hash=spec_hash_of("after"),
        plans=plans,
        quorum=2,
        max_price=PRICE,
    )
    assert escrow.get_task(run.task_id).fee_bps == 300
    # finalize credited the fee; play_task then pushed it to the treasury with claimFor
    assert token.balance_of(contracts.timelock.address) - treasury_before == 15 * GRID * 300 // 10_000
    assert escrow.claimable(contracts.timelock.address) == 0 and len(run.receipts["claim"]) == 5


def test_propose_right_after_a_separate_delegate_on_an_idle_dev_chain(
    contracts: Contracts, dev_accounts: DevAccounts
) -> None:
    """The README's order: `dao delegate`, then `dao propose` with nothing mined in between."""
    dao = dev_accounts.deployer
    governance.delegate(contracts, sender=dao)
    said: list[str] = []
    change = governance.parameter_change(contracts, "escrow.protocolFeeBps=250")
    proposal_id = governance.propose(contracts, [change], "fee to 2.5%", sender=dao, say=said.append)
    assert governance.status(contracts, proposal_id).state is ProposalState.PENDING
    assert not any("delegated its votes" in line for line in said)  # it had delegated already


def test_bad_parameter_is_refused_by_name(contracts: Contracts) -> None:
    with pytest.raises(InvalidInput, match="no governed parameter 'feeBps'.*protocolFeeBps"):
        governance.parameter_change(contracts, "escrow.feeBps=300")
    with pytest.raises(InvalidInput, match="expected CONTRACT.PARAMETER=VALUE"):
        governance.parameter_change(contracts, "protocolFeeBps 300")
    # no customer share of slashes left to govern (docs/decisions.md 17): the registry has no such setter
    with pytest.raises(InvalidInput, match="no governed parameter 'slashCustomerShareBps'"):
        governance.parameter_change(contracts, "registry.slashCustomerShareBps=0")
    assert governance.parse_value("250GRID", "uint256") == 250 * GRID
    assert governance.parse_value("15m", "uint64") == 900


def test_cli_without_deployment_fails_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = CliRunner().invoke(governance.app, ["status", "1", "--deployment", str(missing)])
    assert result.exit_code == 1
    assert f"no deployment at {missing}: run `hashgrid deploy` first" in " ".join(result.output.split())


def test_cli_steps_print_json_for_scripts(contracts: Contracts, deployment: Deployment,
                                          tmp_path: Path) -> None:
    """`dao propose|vote|queue|execute|status|list --json`: ids as strings (they pass 2**53), the state after
    each step; the steps' own lines go to stderr so stdout stays JSON."""
    import json

    path = str(deployment.save(tmp_path / "deployment.json"))
    rpc = contracts.client.rpc_url
    runner = CliRunner()

    def step(*args: str) -> dict[str, object]:
        result = runner.invoke(governance.app, [*args, "--deployment", path, "--rpc", rpc, "--json"])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    proposed = step("propose", "--set", "escrow.protocolFeeBps=250", "--description", "fee to 2.5%")
    assert proposed["state"] == "pending" and int(str(proposed["proposal_id"])) > 2**53
    assert step("vote", "latest")["state"] == "active"
    assert step("queue", "latest")["state"] == "queued"
    assert step("execute", "latest") == {"proposal_id": proposed["proposal_id"], "state": "executed"}
    assert contracts.escrow.param("protocolFeeBps") == 250
    status = step("status", "latest")
    assert status["state"] == "executed" and status["description"] == "fee to 2.5%"
    listed = step("list")
    assert listed["count"] >= 1 and listed["data"][0]["proposal_id"] == proposed["proposal_id"]
