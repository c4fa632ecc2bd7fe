"""The full on-chain life of one task, driven from Python against anvil: post, assign 3, commit, reveal,
finalize from the settler's reports with one dissenter slashed (all of it to the treasury, none to the
customer) and two agreeing providers credited, the remainder credited back to the customer and the fee to the
treasury; then everyone claims."""

from __future__ import annotations

import pytest
from eth_utils import keccak

from hashgrid.chain.contracts import (
    ZERO_HASH,
    Contracts,
    ReplicaState,
    TaskState,
    TaskTerms,
    commitment_for,
)
from hashgrid.chain.reverts import error_class
from scripts.devnet import GRID, DevAccounts, spec_hash_of
from tests.conftest import PROVIDER_STAKE

PRICE = 10 * GRID  # per-replica cap
FEE_BPS = 200
DISSENT_BPS = 5_000


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
    terms = TaskTerms(spec_hash_of("lifecycle"), 3, 2, 4, PRICE, deadline)
    receipt = escrow.post_task(terms, sender=customer)
    task_id = escrow.task_id_of(receipt)
    task = escrow.get_task(task_id)
    assert task.state is TaskState.POSTED and task.customer == customer.address
    assert (task.replicas, task.quorum, task.max_replicas, task.deadline) == (3, 2, 4, deadline)
    assert (task.assigned, task.round, task.fee_bps) == (0, 0, FEE_BPS)
    assert escrow.spec_hash_of(task_id) == spec_hash_of("lifecycle")
    assert token.balance_of(escrow.address) == escrowed == escrow.total_locked()

    escrow.assign(task_id, [p1.address, p2.address, p3.address], sender=operator)
    task = escrow.get_task(task_id)
    assert task.state is TaskState.ASSIGNED
    assert (task.assigned, task.round, task.round_size, task.round_committed) == (3, 1, 3, 0)
    assert escrow.replicas_of(task_id) == [p1.address, p2.address, p3.address]
    assert escrow.replica_of(task_id, p1.address).state is ReplicaState.ASSIGNED
    assert escrow.replica_of(task_id, idle.address).state is ReplicaState.NONE
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
    assert escrow.get_task(task_id).round_committed == 3  # reveals open before the commit deadline
    for provider in (p1, p2, p3):
        escrow.reveal(task_id, answers[provider.address], salts[provider.address], sender=provider)
    assert escrow.replica_of(task_id, p3.address).state is ReplicaState.REVEALED

    paid_p1, paid_p2 = 7 * GRID, 8 * GRID  # billing's metered amounts, under the cap
    # billing metered p3 too; the report pays only replicas that revealed the accepted result
    reports = escrow.build_reports(
        task_id, {p1.address: paid_p1, p2.address.lower(): paid_p2, p3.address: GRID}
    )
    by_address = sorted((p1, p2, p3), key=lambda p: int(p.address, 16))
    assert [r.provider for r in reports] == [p.address for p in by_address]
    expected = {p1.address: (good, paid_p1), p2.address: (good, paid_p2), p3.address: (bad, 0)}
    assert {r.provider: (r.result_hash, r.payment) for r in reports} == expected
    receipt = escrow.finalize(task_id, reports, sender=operator)

    fee = (paid_p1 + paid_p2) * FEE_BPS // 10_000
    refund = escrowed - paid_p1 - paid_p2 - fee
    slashed = PROVIDER_STAKE * DISSENT_BPS // 10_000
    assert (fee, refund, slashed) == (3 * GRID // 10, 25_500_000_000_000_000_000, 500 * GRID)

    task = escrow.get_task(task_id)
    assert task.state is TaskState.SETTLED and escrow.result_of(task_id) == good
    assert [r.state for r in escrow.replicas(task_id)] == [
        ReplicaState.AGREED,
        ReplicaState.AGREED,
        ReplicaState.DISSENTED,
    ]
    finalized = {e.args["provider"]: e.args for e in escrow.receipt_events(receipt, "ReplicaFinalized")}
    assert {p: (a["outcome"], a["paid"]) for p, a in finalized.items()} == {
        p1.address: (ReplicaState.AGREED, paid_p1),
        p2.address: (ReplicaState.AGREED, paid_p2),
        p3.address: (ReplicaState.DISSENTED, 0),
    }
    settled = escrow.receipt_events(receipt, "TaskSettled")[0].args
    assert (
        settled["resultHash"],
        settled["agreeing"],
        settled["paid"],
        settled["fee"],
        settled["refunded"],
    ) == (good, 2, paid_p1 + paid_p2, fee, refund)

    # finalize moved no escrow tokens: everything it owes is a credit; only the slash left the registry
    credits = {customer.address: refund, p1.address: paid_p1, p2.address: paid_p2, treasury: fee}
    assert {a: escrow.claimable(a) for a in everyone} == {a: credits.get(a, 0) for a in everyone}
    assert escrow.total_claimable() == escrowed == token.balance_of(escrow.address)
    assert escrow.total_locked() == 0
    mid = {a: token.balance_of(a) for a in everyone}
    assert mid[customer.address] - before[customer.address] == -escrowed  # no share of the slash
    assert mid[treasury] - before[treasury] == slashed
    slash_events = [e.args for e in registry.receipt_events(receipt, "Slashed")]
    assert [(a["provider"], a["taskId"], a["amount"], a["recipient"]) for a in slash_events] == [
        (p3.address, task_id, slashed, treasury)
    ]
    assert [mid[p.address] for p in (p1, p2, p3)] == [before[p.address] for p in (p1, p2, p3)]

    # claim: providers and the customer themselves; anyone may push the treasury's fee with claimFor
    for payee in (p1, p2, customer):
        claimed = escrow.receipt_events(escrow.claim(sender=payee), "Claimed")
        assert [(e.args["account"], e.args["amount"]) for e in claimed] == [
            (payee.address, credits[payee.address])
        ]
    escrow.claim_for(treasury, sender=idle)
    with pytest.raises(error_class("EscrowNothingToClaim")) as caught:
        escrow.claim(sender=p1)
    assert caught.value.error_args == {"account": p1.address}

    after = {a: token.balance_of(a) for a in everyone}
    assert after[customer.address] - before[customer.address] == -escrowed + refund  # its refund, no more
    assert after[p1.address] - before[p1.address] == paid_p1
    assert after[p2.address] - before[p2.address] == paid_p2
    assert after[p3.address] == before[p3.address]  # wallet untouched; the stake paid
    assert after[idle.address] == before[idle.address]
    assert after[treasury] - before[treasury] == fee + slashed
    assert after[escrow.address] == 0 == escrow.total_locked() == escrow.total_claimable()
    assert all(escrow.claimable(a) == 0 for a in everyone)
    assert after[registry.address] == 4 * PROVIDER_STAKE - slashed
    assert sum(after.values()) == sum(before.values())  # tokens only moved between these accounts
    assert registry.stake_of(p3.address) == PROVIDER_STAKE - slashed
    assert [registry.stake_of(p.address) for p in (p1, p2)] == [PROVIDER_STAKE] * 2
    assert [registry.active_assignments(p.address) for p in (p1, p2, p3)] == [0, 0, 0]


def test_batch_post_no_show_and_expire(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    """postTasks posts several tasks with one transfer; a no-show is reported with a zero hash; a task left
    alone expires with its replica list sorted by address, and the refund is a claimable credit."""
    token, escrow = contracts.token, contracts.escrow
    customer, operator = dev_accounts.customer, dev_accounts.deployer
    p1, p2, p3, _ = dev_accounts.providers
    deadline = contracts.client.timestamp() + 24 * 3600
    terms = [TaskTerms(spec_hash_of(f"batch {i}"), 2, 1, 2, PRICE, deadline) for i in range(3)]
    total = 3 * escrow.escrow_for(2, PRICE)
    token.approve(escrow.address, total, sender=customer)
    before = token.balance_of(customer.address)
    receipt = escrow.post_tasks(terms, sender=customer)
    first, second, third = escrow.task_ids_of(receipt)
    assert (second, third) == (first + 1, first + 2) and escrow.task_id_of(receipt) == first
    assert before - token.balance_of(customer.address) == total == escrow.total_locked()
    assert [escrow.spec_hash_of(t) for t in (first, second, third)] == [t.spec_hash for t in terms]

    # first task: p2 commits and reveals, p1 never shows up; quorum 1 settles on p2's result
    escrow.assign(first, [p1.address, p2.address], sender=operator)
    good, salt = keccak(text="answer"), keccak(text="salt")
    escrow.commit(first, commitment_for(good, salt, p2.address), sender=p2)
    contracts.client.rpc("evm_increaseTime", [escrow.param("commitWindow") + 1])
    contracts.client.rpc("evm_mine")
    escrow.reveal(first, good, salt, sender=p2)
    reports = escrow.build_reports(first, {p1.address: PRICE, p2.address: PRICE // 2})
    assert {r.provider: (r.result_hash, r.payment) for r in reports} == {
        p1.address: (ZERO_HASH, 0),
        p2.address: (good, PRICE // 2),
    }
    contracts.client.rpc("evm_increaseTime", [escrow.param("revealWindow") + 1])
    contracts.client.rpc("evm_mine")
    escrow.finalize(first, reports, sender=operator)
    assert [r.state for r in escrow.replicas(first)] == [ReplicaState.NO_SHOW, ReplicaState.AGREED]
    assert escrow.claimable(p2.address) == PRICE // 2

    # second task: assigned, nobody commits; third: never assigned. Both expire after the deadline + grace.
    escrow.assign(second, [p3.address, p1.address], sender=operator)
    contracts.client.rpc("evm_increaseTime", [24 * 3600 + escrow.param("expiryGrace") + 1])
    contracts.client.rpc("evm_mine")
    refund_before = escrow.claimable(customer.address)
    escrow.expire(second, sender=p3)  # the replica list comes from TaskAssigned events, sorted
    escrow.expire(third, [], sender=p3)
    assert escrow.get_task(second).state is TaskState.EXPIRED is escrow.get_task(third).state
    assert escrow.claimable(customer.address) - refund_before == 2 * escrow.escrow_for(2, PRICE)
    assert escrow.total_locked() == 0
    assert token.balance_of(escrow.address) == escrow.total_claimable()
