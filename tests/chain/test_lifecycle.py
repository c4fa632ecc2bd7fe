"""The full on-chain life of one task, driven from Python against anvil: post, assign 3, commit, reveal,
finalize with one dissenter slashed and two agreeing providers paid, the remainder refunded."""

from __future__ import annotations

from eth_utils import keccak

from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState, commitment_for
from scripts.devnet import GRID, DevAccounts, spec_hash_of
from tests.conftest import PROVIDER_STAKE

PRICE = 10 * GRID  # per-replica cap
FEE_BPS = 200
DISSENT_BPS = 5_000
CUSTOMER_SHARE_BPS = 5_000


def test_task_life_pays_agreeing_slashes_dissenter_refunds_rest(
    contracts: Contracts, dev_accounts: DevAccounts
) -> None:
    token, escrow, registry = contracts.token, contracts.escrow, contracts.registry
    customer, operator = dev_accounts.customer, dev_accounts.deployer
    p1, p2, p3, idle = dev_accounts.providers
    treasury = contracts.timelock.address
    everyone = [
        customer.address,
        p1.address,
        p2.address,
        p3.address,
        idle.address,
        treasury,
        escrow.address,
        registry.address,
    ]
    before = {a: token.balance_of(a) for a in everyone}
    assert before[escrow.address] == 0 and before[registry.address] == 4 * PROVIDER_STAKE

    # post: 4 replicas paid for (room for one replacement), 3 wanted, quorum 2
    escrowed = 4 * PRICE + 4 * PRICE * FEE_BPS // 10_000
    assert escrow.escrow_for(4, PRICE) == escrowed == 40_800_000_000_000_000_000
    token.approve(escrow.address, escrowed, sender=customer)
    deadline = contracts.client.timestamp() + 24 * 3600
    receipt = escrow.post_task(spec_hash_of("lifecycle"), 3, 2, 4, PRICE, deadline, sender=customer)
    task_id = escrow.task_id_of(receipt)
    assert escrow.get_task(task_id).state is TaskState.POSTED
    assert token.balance_of(escrow.address) == escrowed == escrow.total_locked()

    escrow.assign(task_id, [p1.address, p2.address, p3.address], sender=operator)
    assert escrow.get_task(task_id).state is TaskState.ASSIGNED
    assert [registry.active_assignments(p.address) for p in (p1, p2, p3, idle)] == [1, 1, 1, 0]

    good, bad = keccak(text="the right answer"), keccak(text="a wrong answer")
    salts = {p.address: keccak(text=f"salt {p.address}") for p in (p1, p2, p3)}
    answers = {p1.address: good, p2.address: good, p3.address: bad}
    for provider in (p1, p2, p3):
        commitment = commitment_for(answers[provider.address], salts[provider.address], provider.address)
        assert commitment == contracts.client.call(
            escrow.fn("commitmentFor", answers[provider.address], salts[provider.address], provider.address)
        )
        escrow.commit(task_id, commitment, sender=provider)
    for provider in (p1, p2, p3):
        escrow.reveal(task_id, answers[provider.address], salts[provider.address], sender=provider)

    paid_p1, paid_p2 = 7 * GRID, 8 * GRID  # billing's metered amounts, under the cap
    receipt = escrow.finalize(task_id, [paid_p1, paid_p2, 0], sender=operator)

    fee = (paid_p1 + paid_p2) * FEE_BPS // 10_000
    refund = escrowed - paid_p1 - paid_p2 - fee
    slashed = PROVIDER_STAKE * DISSENT_BPS // 10_000
    to_customer = slashed * CUSTOMER_SHARE_BPS // 10_000
    to_treasury = slashed - to_customer
    assert (fee, refund, slashed) == (3 * GRID // 10, 25_500_000_000_000_000_000, 500 * GRID)

    task = escrow.get_task(task_id)
    assert task.state is TaskState.SETTLED and task.result_hash == good
    assert [r.state for r in escrow.get_replicas(task_id)] == [
        ReplicaState.AGREED,
        ReplicaState.AGREED,
        ReplicaState.DISSENTED,
    ]
    settled = escrow.receipt_events(receipt, "TaskSettled")[0].args
    assert (
        settled["resultHash"],
        settled["agreeing"],
        settled["paid"],
        settled["fee"],
        settled["refunded"],
    ) == (good, 2, paid_p1 + paid_p2, fee, refund)

    after = {a: token.balance_of(a) for a in everyone}
    assert after[customer.address] - before[customer.address] == -escrowed + refund + to_customer
    assert after[p1.address] - before[p1.address] == paid_p1
    assert after[p2.address] - before[p2.address] == paid_p2
    assert after[p3.address] == before[p3.address]  # wallet untouched; the stake paid
    assert after[idle.address] == before[idle.address]
    assert after[treasury] - before[treasury] == fee + to_treasury
    assert after[escrow.address] == 0 == escrow.total_locked()
    assert after[registry.address] == 4 * PROVIDER_STAKE - slashed
    assert sum(after.values()) == sum(before.values())  # tokens only moved between these accounts
    assert registry.stake_of(p3.address) == PROVIDER_STAKE - slashed
    assert [registry.stake_of(p.address) for p in (p1, p2)] == [PROVIDER_STAKE] * 2
    assert [registry.active_assignments(p.address) for p in (p1, p2, p3)] == [0, 0, 0]
