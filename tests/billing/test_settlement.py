"""Settlement against a real anvil: exact payments and refunds, exactly once across repeats, crashes and an
RPC outage (a real stopped node, not a mock), batches that survive one bad task, and reconciliation."""

from __future__ import annotations

import dataclasses

from eth_account.signers.local import LocalAccount

from billing.invoice import invoice_from_events, planned_invoice, provider_earnings
from billing.journal import SettlementJournal, SettlementState
from billing.prices import price
from billing.reconcile import reconcile
from billing.settlement import PaymentPlan, SettlementRequest, Settler
from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts, TaskState
from scripts.devnet import DevAccounts
from scripts.localnet import Anvil
from tests.billing.chainplay import MAX_PRICE, SHEETS, play_to_reveal


def nonce_of(contracts: Contracts, account: LocalAccount) -> int:
    return int(contracts.client.w3.eth.get_transaction_count(account.address))


def settler(contracts: Contracts, journal: SettlementJournal, accounts: DevAccounts, **kw: object) -> Settler:
    return Settler(contracts.escrow, journal, sender=accounts.deployer, **kw)  # type: ignore[arg-type]


def test_three_honest_providers_paid_their_metered_price_and_customer_refunded_the_rest(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    escrow, token = contracts.escrow, contracts.token
    played = play_to_reveal(contracts, dev_accounts, cpus=(1.5, 1.6, 40.0))  # provider 2 inflates its cpu
    plan = played.plan
    assert plan.billed.cpu_ms == 1_600  # median: the inflated 40 s changes nothing
    expected = {p.address.lower(): price(plan.billed, SHEETS[i], MAX_PRICE)
                for i, p in enumerate(played.providers)}
    assert plan.payments == expected and len(set(expected.values())) == 3  # each on its own sheet
    fee_bps = escrow.get_task(played.task_id).fee_bps
    escrowed = escrow.escrow_for(3, MAX_PRICE)
    paid = sum(expected.values())
    fee = paid * fee_bps // 10_000
    refund = escrowed - paid - fee

    [outcome] = settler(contracts, journal, dev_accounts).settle([plan])
    assert outcome.state == SettlementState.CONFIRMED and outcome.sent_tx and outcome.chain_state == "settled"
    assert escrow.get_task(played.task_id).state == TaskState.SETTLED
    for p in played.providers:
        assert escrow.claimable(p.address) == expected[p.address.lower()]
    assert escrow.claimable(dev_accounts.customer.address) == refund
    assert escrow.claimable(escrow.treasury()) == fee

    for p in played.providers:
        before = token.balance_of(p.address)
        escrow.claim(sender=p)
        assert token.balance_of(p.address) - before == expected[p.address.lower()]
    before = token.balance_of(dev_accounts.customer.address)
    escrow.claim(sender=dev_accounts.customer)
    assert token.balance_of(dev_accounts.customer.address) - before == refund

    events = escrow.events()
    invoice = invoice_from_events(played.task_id, events, plan)
    assert invoice is not None and invoice.state == "settled"
    assert (invoice.escrowed, invoice.paid, invoice.fee, invoice.refund) == (escrowed, paid, fee, refund)
    assert {line.provider: line.payment for line in invoice.lines} == expected
    predicted = planned_invoice(plan, max_replicas=3, fee_bps=fee_bps)
    assert (predicted.paid, predicted.fee, predicted.refund) == (paid, fee, refund)
    earned = provider_earnings(played.providers[0].address, events, {played.task_id: plan})
    assert [(e.task_id, e.outcome, e.paid) for e in earned] == [(played.task_id, "agreed",
                                                                 expected[played.providers[0].address.lower()])]
    assert reconcile(escrow, journal).ok


def test_settling_twice_sends_nothing_the_second_time(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    played = play_to_reveal(contracts, dev_accounts)
    first = settler(contracts, journal, dev_accounts).settle([played.plan])[0]
    nonce, block = nonce_of(contracts, dev_accounts.deployer), contracts.client.block_number()
    again = settler(contracts, journal, dev_accounts).settle([played.plan])[0]
    assert first.sent_tx and again.sent_tx is None and again.state == SettlementState.CONFIRMED
    assert (nonce_of(contracts, dev_accounts.deployer), contracts.client.block_number()) == (nonce, block)
    resumed = settler(contracts, journal, dev_accounts).resume()
    assert resumed == [] and nonce_of(contracts, dev_accounts.deployer) == nonce


def test_crash_after_sending_before_journaling_is_not_sent_again(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    """The finalize landed but the process died before recording it: the journal still says pending."""
    escrow = contracts.escrow
    played = play_to_reveal(contracts, dev_accounts)
    journal.begin(played.task_id, played.plan.payments)
    receipt = escrow.finalize(played.task_id, escrow.build_reports(played.task_id, played.plan.payments),
                              sender=dev_accounts.deployer)
    paid_once = {p.address: escrow.claimable(p.address) for p in played.providers}
    nonce = nonce_of(contracts, dev_accounts.deployer)

    [outcome] = settler(contracts, journal, dev_accounts).resume()
    assert outcome.state == SettlementState.CONFIRMED and outcome.sent_tx is None
    assert nonce_of(contracts, dev_accounts.deployer) == nonce
    row = journal.get(played.task_id)
    assert row is not None and row.chain_tx_hash == "0x" + bytes(receipt["transactionHash"]).hex()
    assert {p.address: escrow.claimable(p.address) for p in played.providers} == paid_once


def test_crash_after_journaling_before_broadcast_sends_once(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    """The journal says sent with a hash no node ever saw: the Settler sends a fresh transaction, once."""
    played = play_to_reveal(contracts, dev_accounts)
    journal.begin(played.task_id, played.plan.payments)
    journal.mark_sent([played.task_id], "0x" + "ab" * 32, nonce=10**6)
    nonce = nonce_of(contracts, dev_accounts.deployer)
    [outcome] = settler(contracts, journal, dev_accounts).resume()
    assert outcome.state == SettlementState.CONFIRMED and outcome.sent_tx
    assert nonce_of(contracts, dev_accounts.deployer) == nonce + 1
    assert contracts.escrow.claimable(played.providers[0].address) == played.plan.payments[
        played.providers[0].address.lower()]


def test_rpc_outage_is_recorded_then_settled_exactly_once(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    escrow = contracts.escrow
    played = play_to_reveal(contracts, dev_accounts)
    with Anvil() as stopped:  # a real node, stopped: its port refuses connections
        dead_url = stopped.url
    dead = Contracts.load(ChainClient(dead_url, tx_timeout=2.0, request_timeout=2.0), contracts.deployment)
    sleeps: list[float] = []
    outage = Settler(dead.escrow, journal, sender=dev_accounts.deployer, max_attempts=3, backoff=0.01,
                     sleep=sleeps.append)
    [down] = outage.settle([played.plan])
    assert down.state == SettlementState.PENDING and down.retryable and down.error_code == "chain_unavailable"
    assert sleeps == [0.01, 0.02]  # exponential back-off between the three attempts
    assert escrow.get_task(played.task_id).state == TaskState.ASSIGNED

    nonce = nonce_of(contracts, dev_accounts.deployer)
    [up] = settler(contracts, journal, dev_accounts).resume()
    assert up.state == SettlementState.CONFIRMED and up.sent_tx
    assert nonce_of(contracts, dev_accounts.deployer) == nonce + 1
    settler(contracts, journal, dev_accounts).settle([played.plan])
    assert nonce_of(contracts, dev_accounts.deployer) == nonce + 1
    for p in played.providers:
        assert escrow.claimable(p.address) == played.plan.payments[p.address.lower()]


def test_a_batch_with_one_bad_task_settles_the_others(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    good = [play_to_reveal(contracts, dev_accounts, label=f"good {i}") for i in range(3)]
    bad = play_to_reveal(contracts, dev_accounts, label="bad")
    greedy = dict(bad.plan.payments)
    greedy[bad.providers[0].address.lower()] = MAX_PRICE + 1  # above the cap: the escrow refuses it
    plans: list[PaymentPlan] = [good[0].plan, SettlementRequest(bad.task_id, greedy), good[1].plan,
                                good[2].plan]
    nonce = nonce_of(contracts, dev_accounts.deployer)
    outcomes = {o.task_id: o for o in settler(contracts, journal, dev_accounts, batch_size=10).settle(plans)}
    assert outcomes[bad.task_id].state == SettlementState.FAILED
    assert outcomes[bad.task_id].error_name == "EscrowPaymentAboveCap" and not outcomes[bad.task_id].retryable
    for played in good:
        assert outcomes[played.task_id].state == SettlementState.CONFIRMED
        assert contracts.escrow.get_task(played.task_id).state == TaskState.SETTLED
    assert nonce_of(contracts, dev_accounts.deployer) == nonce + 3  # the batch reverted in simulation only

    [fixed] = settler(contracts, journal, dev_accounts).settle([bad.plan])  # a corrected plan may retry
    assert fixed.state == SettlementState.CONFIRMED


def test_batches_of_several_tasks_in_one_transaction(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    played = [play_to_reveal(contracts, dev_accounts, label=f"batch {i}") for i in range(5)]
    nonce = nonce_of(contracts, dev_accounts.deployer)
    outcomes = settler(contracts, journal, dev_accounts, batch_size=3).settle([p.plan for p in played])
    assert all(o.state == SettlementState.CONFIRMED for o in outcomes)
    assert len({o.sent_tx for o in outcomes}) == 2 and nonce_of(contracts, dev_accounts.deployer) == nonce + 2


def test_reconciliation_reports_planted_differences(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    escrow = contracts.escrow
    settled = play_to_reveal(contracts, dev_accounts, label="settled")
    still_open = play_to_reveal(contracts, dev_accounts, label="open")
    settler(contracts, journal, dev_accounts).settle([settled.plan])
    provider = settled.providers[1].address.lower()
    db_paid = {(settled.task_id, p.address.lower()): settled.plan.payments[p.address.lower()]
               for p in settled.providers}
    assert reconcile(escrow, journal, db_paid=db_paid).ok

    # plant: the journal claims one more wei than the chain paid, the database another amount, and a task
    # the chain has not closed is marked confirmed
    row = journal.get(settled.task_id)
    assert row is not None and row.reports is not None
    reports = [dict(r) for r in row.reports]
    for r in reports:
        if r["provider"] == provider:
            r["payment"] = str(int(r["payment"]) + 1)
    journal._update([settled.task_id], reports=reports)
    db_paid[(settled.task_id, provider)] = 7
    journal.begin(still_open.task_id, still_open.plan.payments)
    journal.mark_confirmed(still_open.task_id, chain_state="settled", chain_tx_hash=None, paid=1, fee=0,
                           refund=0)

    found = reconcile(escrow, journal, db_paid=db_paid)
    kinds = sorted(d.kind for d in found.differences)
    assert kinds == ["confirmed_not_on_chain", "db_paid_mismatch", "payment_mismatch"], found.differences
    [mismatch] = found.of_kind("payment_mismatch")
    on_chain = settled.plan.payments[provider]
    assert (mismatch.task_id, mismatch.account, mismatch.expected, mismatch.actual) == (
        settled.task_id, provider, str(on_chain + 1), str(on_chain))
    assert dataclasses.asdict(found.of_kind("db_paid_mismatch")[0])["expected"] == "7"


def test_reconciliation_sees_a_finalize_outside_the_journal(
    contracts: Contracts, dev_accounts: DevAccounts, journal: SettlementJournal
) -> None:
    escrow = contracts.escrow
    played = play_to_reveal(contracts, dev_accounts)
    escrow.finalize(played.task_id, escrow.build_reports(played.task_id, played.plan.payments),
                    sender=dev_accounts.deployer)
    found = reconcile(escrow, journal)
    assert [d.kind for d in found.differences] == ["not_in_journal"]
    assert reconcile(escrow, None).ok  # claimable balances agree with the events
