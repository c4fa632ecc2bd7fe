"""Bad inputs fail with the contract's named error surfaced as a Python exception (decoded from a simulated
call, so no gas is spent), carrying the failing values."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_utils import keccak

from hashgrid.chain.contracts import (
    Contracts,
    ReplicaReport,
    TaskState,
    TaskTerms,
    commitment_for,
    low248,
)
from hashgrid.chain.reverts import error_class
from hashgrid.errors import ContractRevert
from scripts.devnet import GRID, DevAccounts, post, spec_hash_of

PRICE = 10 * GRID
GOOD = keccak(text="good")
SALT = keccak(text="salt")


@pytest.fixture
def task_id(contracts: Contracts, dev_accounts: DevAccounts) -> int:
    """A task assigned to providers 0-2 (provider 3 stays free)."""
    task, _ = post(
        contracts, dev_accounts.customer, spec_hash_of("errors"), replicas=3, quorum=2, max_price=PRICE
    )
    contracts.escrow.assign(
        task, [p.address for p in dev_accounts.providers[:3]], sender=dev_accounts.deployer
    )
    return task


def _commit_all(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    for p in dev_accounts.providers[:3]:
        contracts.escrow.commit(task_id, commitment_for(GOOD, SALT, p.address), sender=p)


def test_reveal_not_matching_commit(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    _commit_all(contracts, dev_accounts, task_id)
    liar = dev_accounts.providers[0]
    nonce = contracts.client.w3.eth.get_transaction_count(liar.address)
    with pytest.raises(error_class("EscrowRevealMismatch")) as caught:
        contracts.escrow.reveal(task_id, keccak(text="something else"), SALT, sender=liar)
    err = caught.value
    assert isinstance(err, ContractRevert) and err.error_name == "EscrowRevealMismatch"
    assert err.error_args["taskId"] == task_id and err.error_args["provider"] == liar.address
    assert err.error_args["expected"] == low248(commitment_for(GOOD, SALT, liar.address))  # as stored
    assert str(err).startswith(
        f"reveal: EscrowRevealMismatch(taskId={task_id}, provider={liar.address}, expected=0x"
    )
    assert contracts.client.w3.eth.get_transaction_count(liar.address) == nonce  # simulated: nothing sent


def test_commit_after_the_window(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    window = contracts.escrow.param("commitWindow")
    contracts.client.rpc("evm_increaseTime", [window + 1])
    contracts.client.rpc("evm_mine")
    late = dev_accounts.providers[0]
    with pytest.raises(error_class("EscrowCommitWindowClosed")) as caught:
        contracts.escrow.commit(task_id, commitment_for(GOOD, SALT, late.address), sender=late)
    args = caught.value.error_args
    assert args["taskId"] == task_id and args["nowTime"] > args["commitDeadline"]


def test_provider_not_assigned(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    outsider = dev_accounts.providers[3]
    with pytest.raises(error_class("EscrowNotAssigned")) as caught:
        contracts.escrow.commit(task_id, commitment_for(GOOD, SALT, outsider.address), sender=outsider)
    assert caught.value.error_args == {"taskId": task_id, "caller": outsider.address}


def _reveal_all(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> list[ReplicaReport]:
    """Every replica commits and reveals GOOD; returns the correct reports paying GRID each."""
    _commit_all(contracts, dev_accounts, task_id)
    for p in dev_accounts.providers[:3]:
        contracts.escrow.reveal(task_id, GOOD, SALT, sender=p)
    return contracts.escrow.build_reports(task_id, {p.address: GRID for p in dev_accounts.providers[:3]})


def test_double_finalize(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    reports = _reveal_all(contracts, dev_accounts, task_id)
    contracts.escrow.finalize(task_id, reports, sender=dev_accounts.deployer)
    with pytest.raises(error_class("EscrowTaskNotInState")) as caught:
        contracts.escrow.finalize(task_id, reports, sender=dev_accounts.deployer)
    assert caught.value.error_args["state"] == TaskState.SETTLED
    assert "state=Settled(3)" in str(caught.value)


def test_finalize_report_unsorted(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    reports = _reveal_all(contracts, dev_accounts, task_id)
    swapped = [reports[1], reports[0], reports[2]]
    with pytest.raises(error_class("EscrowReportUnsorted")) as caught:
        contracts.escrow.finalize(task_id, swapped, sender=dev_accounts.deployer)
    assert caught.value.error_args["taskId"] == task_id
    assert caught.value.error_args["provider"] in {r.provider for r in reports[:2]}
    repeated = [reports[0], reports[0], reports[2]]
    with pytest.raises(error_class("EscrowReportUnsorted")):
        contracts.escrow.finalize(task_id, repeated, sender=dev_accounts.deployer)


def test_finalize_report_length(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    reports = _reveal_all(contracts, dev_accounts, task_id)
    with pytest.raises(error_class("EscrowReportLength")) as caught:
        contracts.escrow.finalize(task_id, reports[:2], sender=dev_accounts.deployer)
    assert caught.value.error_args == {"taskId": task_id, "length": 2, "assigned": 3}


def test_finalize_report_hash_mismatch(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    reports = _reveal_all(contracts, dev_accounts, task_id)
    forged = keccak(text="not what it revealed")
    reports[1] = replace(reports[1], result_hash=forged)
    with pytest.raises(error_class("EscrowReportHashMismatch")) as caught:
        contracts.escrow.finalize(task_id, reports, sender=dev_accounts.deployer)
    assert caught.value.error_args == {"taskId": task_id, "provider": reports[1].provider, "reported": forged}


def test_finalize_payment_checks(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    escrow, operator = contracts.escrow, dev_accounts.deployer
    task, _ = post(
        contracts, dev_accounts.customer, spec_hash_of("payments"), replicas=3, quorum=2, max_price=PRICE
    )
    providers = dev_accounts.providers[:3]
    escrow.assign(task, [p.address for p in providers], sender=operator)
    liar = providers[2]
    answers = {p.address: GOOD for p in providers} | {liar.address: keccak(text="bad")}
    for p in providers:
        escrow.commit(task, commitment_for(answers[p.address], SALT, p.address), sender=p)
    for p in providers:
        escrow.reveal(task, answers[p.address], SALT, sender=p)
    metered = {p.address: GRID for p in providers}
    unfiltered = escrow.build_reports(task, metered, only_agreeing=False)
    with pytest.raises(error_class("EscrowPaymentToNonAgreeing")) as caught:
        escrow.finalize(task, unfiltered, sender=operator)
    assert caught.value.error_args == {"taskId": task, "provider": liar.address, "amount": GRID}
    above = escrow.build_reports(task, {p.address: PRICE + 1 for p in providers})
    with pytest.raises(error_class("EscrowPaymentAboveCap")) as caught:
        escrow.finalize(task, above, sender=operator)
    assert caught.value.error_args["amount"] == PRICE + 1 and caught.value.error_args["cap"] == PRICE
    escrow.finalize(task, escrow.build_reports(task, metered), sender=operator)
    assert escrow.get_task(task).state is TaskState.SETTLED


def test_commit_in_a_closed_round(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    """A replica that did not commit in its round may not commit after a later assign opened another."""
    escrow, operator = contracts.escrow, dev_accounts.deployer
    task, _ = post(
        contracts,
        dev_accounts.customer,
        spec_hash_of("rounds"),
        replicas=2,
        quorum=2,
        max_price=PRICE,
        max_replicas=3,
    )
    p0, p1, p2 = dev_accounts.providers[:3]
    escrow.assign(task, [p0.address, p1.address], sender=operator)
    escrow.commit(task, commitment_for(GOOD, SALT, p0.address), sender=p0)
    escrow.assign(task, [p2.address], sender=operator)  # a replacement for p1: round 2
    assert escrow.get_task(task).round == 2
    with pytest.raises(error_class("EscrowRoundClosed")) as caught:
        escrow.commit(task, commitment_for(GOOD, SALT, p1.address), sender=p1)
    assert caught.value.error_args == {
        "taskId": task,
        "provider": p1.address,
        "replicaRound": 1,
        "currentRound": 2,
    }


def test_allowance_too_small(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    escrow, customer = contracts.escrow, dev_accounts.customer
    needed = escrow.escrow_for(3, PRICE)
    contracts.token.approve(escrow.address, needed - 1, sender=customer)
    deadline = contracts.client.timestamp() + 86_400
    with pytest.raises(error_class("ERC20InsufficientAllowance")) as caught:
        escrow.post_task(TaskTerms(spec_hash_of("too little"), 3, 2, 3, PRICE, deadline), sender=customer)
    assert caught.value.error_args == {"spender": escrow.address, "allowance": needed - 1, "needed": needed}


def test_assign_unstaked_provider(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    task, _ = post(
        contracts, dev_accounts.customer, spec_hash_of("unstaked"), replicas=3, quorum=2, max_price=PRICE
    )
    stranger = dev_accounts.spare[0]
    providers = [dev_accounts.providers[0].address, dev_accounts.providers[1].address, stranger.address]
    with pytest.raises(error_class("EscrowProviderNotStaked")) as caught:
        contracts.escrow.assign(task, providers, sender=dev_accounts.deployer)
    assert caught.value.error_args == {"taskId": task, "provider": stranger.address}


def test_assign_duplicate_provider(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    task, _ = post(
        contracts, dev_accounts.customer, spec_hash_of("dup"), replicas=3, quorum=2, max_price=PRICE
    )
    p0, p1 = dev_accounts.providers[:2]
    with pytest.raises(error_class("EscrowDuplicateProvider")) as caught:
        contracts.escrow.assign(task, [p0.address, p1.address, p0.address], sender=dev_accounts.deployer)
    assert caught.value.error_args == {"taskId": task, "provider": p0.address}


def test_unstake_while_assigned(contracts: Contracts, dev_accounts: DevAccounts, task_id: int) -> None:
    busy = dev_accounts.providers[0]
    with pytest.raises(error_class("RegistryStakeLocked")) as caught:
        contracts.registry.request_unstake(GRID, sender=busy)
    assert caught.value.error_args == {"provider": busy.address, "activeAssignments": 1}


def test_non_matcher_calling_assign(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    task, _ = post(
        contracts, dev_accounts.customer, spec_hash_of("role"), replicas=3, quorum=2, max_price=PRICE
    )
    intruder = dev_accounts.customer
    with pytest.raises(error_class("AccessControlUnauthorizedAccount")) as caught:
        contracts.escrow.assign(task, [p.address for p in dev_accounts.providers[:3]], sender=intruder)
    assert caught.value.error_args == {"account": intruder.address, "neededRole": keccak(text="MATCHER_ROLE")}


def test_error_classes_are_stable_and_reachable_by_name() -> None:
    from hashgrid.chain import reverts

    assert reverts.EscrowRevealMismatch is error_class("EscrowRevealMismatch")
    assert issubclass(error_class("EscrowRevealMismatch"), ContractRevert)
    assert error_class("EscrowRevealMismatch").code == "revert_escrow_reveal_mismatch"
