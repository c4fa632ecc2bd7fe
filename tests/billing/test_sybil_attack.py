"""The sybil attack of issue 12, replayed on a real anvil with the real Settler: a customer that runs two of a
k = 3 task's providers has them out-vote the honest third. The honest provider is slashed, but the slash goes
to the DAO treasury; the customer and its sybils together end with less GRID than they started with (the fee
on what they paid themselves) and spent gas on top."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from billing.journal import SettlementJournal, SettlementState
from billing.settlement import Settler
from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState
from scripts.devnet import DevAccounts
from tests.billing.chainplay import play_to_reveal

WRONG, RIGHT = b"\x0b" * 32, b"\x0a" * 32


def holdings(contracts: Contracts, accounts: list[LocalAccount]) -> int:
    """GRID that `accounts` own: wallets, stake (active and unbonding) and unclaimed escrow credits."""
    registry, escrow, token = contracts.registry, contracts.escrow, contracts.token
    return sum(token.balance_of(a.address) + registry.stake_of(a.address)
               + registry.unbonding_of(a.address)[0] + escrow.claimable(a.address) for a in accounts)


def eth_of(contracts: Contracts, accounts: list[LocalAccount]) -> int:
    return sum(int(contracts.client.w3.eth.get_balance(a.address)) for a in accounts)


def test_customer_with_two_sybils_outvotes_honest_provider_and_ends_poorer(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    escrow, registry, token = contracts.escrow, contracts.registry, contracts.token
    customer = dev_accounts.customer
    sybils, honest = list(dev_accounts.providers[:2]), dev_accounts.providers[2]
    coalition = [customer, *sybils]
    treasury = contracts.timelock.address
    assert registry.param("treasury") == treasury == escrow.treasury()
    grid_before, eth_before = holdings(contracts, coalition), eth_of(contracts, coalition)
    honest_stake, treasury_before = registry.stake_of(honest.address), token.balance_of(treasury)

    # the sybils (providers 0 and 1) reveal the same wrong hash; the honest provider 2 reveals the right one
    played = play_to_reveal(contracts, dev_accounts, cpus=(1.5, 1.6, 1.5), results=(WRONG, WRONG, RIGHT),
                            label="sybil")
    plan = played.plan
    paid_to = {a.lower() for a, amount in plan.payments.items() if amount}
    assert paid_to == {s.address.lower() for s in sybils}  # billing pays the winning replicas only
    [outcome] = Settler(escrow, journal, sender=dev_accounts.deployer).settle([plan])
    assert outcome.state == SettlementState.CONFIRMED and outcome.chain_state == "settled"

    # the attack "worked": the wrong hash won, the honest provider was slashed as a dissenter
    task = escrow.get_task(played.task_id)
    assert task.state is TaskState.SETTLED and escrow.result_of(played.task_id) == WRONG
    assert escrow.replica_of(played.task_id, honest.address).state is ReplicaState.DISSENTED
    slashed = honest_stake - registry.stake_of(honest.address)
    assert slashed == honest_stake * escrow.param("slashDissentBps") // 10_000 > 0

    # ...and nobody in the coalition collected any of it: the slash went to the treasury alone
    slashes = registry.events(contracts.deployment.start_block, names=["Slashed"], taskId=played.task_id)
    assert [(e.args["provider"], e.args["amount"], e.args["recipient"]) for e in slashes] == [
        (honest.address, slashed, treasury)
    ]
    assert token.balance_of(treasury) - treasury_before == slashed

    # the customer's escrow came back to itself (its sybils' pay, its refund) minus the fee on what it paid
    for account in coalition:
        if escrow.claimable(account.address):
            escrow.claim(sender=account)
    paid = sum(plan.payments.values())
    fee = paid * task.fee_bps // 10_000
    assert paid > 0 and fee > 0
    grid_after = holdings(contracts, coalition)
    assert grid_after < grid_before, "customer + sybils gained GRID from out-voting an honest provider"
    assert grid_before - grid_after == fee
    assert eth_of(contracts, coalition) < eth_before  # and paid gas for the post, commits, reveals and claims
