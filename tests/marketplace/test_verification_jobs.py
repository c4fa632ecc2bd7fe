"""The verifier step of the settle job on anvil: escalation when hashes disagree (or refund when there is no
room), partners and spot checks for replicas run alone, canaries answered wrongly, and the reputation the
indexer folds from the outcomes. The matching and settle jobs run for real; the providers' commits and
reveals are played from the test (the daemons' side is tested in tests/e2e)."""

from __future__ import annotations

import os
import random
from dataclasses import fields
from pathlib import Path

from eth_account.signers.local import LocalAccount
from sqlmodel import Session, select

from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState, commitment_for
from hashgrid.config import DEV_CANARY_KEY
from hashgrid.spec import InputBlob, TaskSpec, spec_document
from marketplace.api.services.explorer import provider_ledger
from marketplace.indexer.tables import ReplicaReplacement
from marketplace.indexer.verification import ProviderReputation, TaskCheck
from marketplace.jobs import JobContext, expire_heartbeats, index_chain, run_matching_round
from marketplace.jobs.canary import canary_accounts, post_canaries, to_post_now
from marketplace.jobs.settle import maybe_ready, settle_tasks, verifier_step
from marketplace.jobs.verify import ESCALATION, standing_of
from marketplace.models import BlobClaim, Provider, SpecRecord, Task
from scripts.devnet import GRID, DevAccounts, fund_canary_wallets
from tests.marketplace import conftest_services as services
from tests.marketplace.conftest_services import (
    add_providers,
    make_ctx,
    make_spec,
    post_spec,
    set_heartbeat,
    stale,
)
from verifier.replication import Standing
from verifier.reputation import ReputationParams

ctx = services.ctx
jobs_db_url = services.jobs_db_url
jobs_engine = services.jobs_engine

RIGHT = b"\x11" * 32
WRONG = b"\x22" * 32
OTHER = b"\x33" * 32


def reveal(contracts: Contracts, task_id: int, results: list[tuple[LocalAccount, bytes]]) -> None:
    """The round's providers commit, then reveal (a reveal opens once the whole round committed)."""
    salts = [os.urandom(32) for _ in results]
    for (by, result), salt in zip(results, salts, strict=True):
        contracts.escrow.commit(task_id, commitment_for(result, salt, by.address), sender=by)
    for (by, result), salt in zip(results, salts, strict=True):
        contracts.escrow.reveal(task_id, result, salt, sender=by)


def assigned(contracts: Contracts, task_id: int) -> list[str]:
    return [p.lower() for p in contracts.escrow.replicas_of(task_id)]


def accounts_of(dev_accounts: DevAccounts, addresses: list[str]) -> list[LocalAccount]:
    by_address = {p.address.lower(): p for p in dev_accounts.providers}
    return [by_address[a] for a in addresses]


def stakes(contracts: Contracts, accounts: list[LocalAccount]) -> list[int]:
    return [contracts.registry.stake_of(a.address) for a in accounts]


def post_and_match(ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts, spec: TaskSpec) -> int:
    """The customer posts `spec`; the indexer and a matching round assign it on chain. The task id."""
    task_id = post_spec(contracts, ctx.engine, dev_accounts.customer, spec)
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    return task_id


def test_disagreement_escalates_until_a_quorum_and_slashes_the_dissenters(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(ctx, contracts, dev_accounts,
                             make_spec("three answers", replicas=3, quorum=2, max_replicas=4))
    first = accounts_of(dev_accounts, assigned(contracts, task_id))
    assert len(first) == 3
    reveal(contracts, task_id, list(zip(first, (WRONG, OTHER, RIGHT), strict=True)))
    index_chain(ctx=ctx)

    outcome = settle_tasks(ctx=ctx)
    assert outcome["escalated"] == [task_id] and outcome["settled"] == []
    assert outcome["matching"]["assigned"] == 1
    task = contracts.escrow.get_task(task_id)
    assert (task.state, task.assigned, task.round) == (TaskState.ASSIGNED, 4, 2)
    extra = accounts_of(dev_accounts, assigned(contracts, task_id)[3:])[0]
    assert extra not in first
    with Session(ctx.engine) as session:
        request = session.get(ReplicaReplacement, (task_id, f"{ESCALATION}1:0"))
        assert request is not None and request.replaced_by == extra.address.lower()

    # the new round is not ready: nothing settles, nothing is requested twice
    again = settle_tasks(ctx=ctx)
    assert again["settled"] == [] and again["escalated"] == []
    assert contracts.escrow.get_task(task_id).assigned == 4

    before = stakes(contracts, first)
    reveal(contracts, task_id, [(extra, RIGHT)])
    index_chain(ctx=ctx)
    done = settle_tasks(ctx=ctx)
    assert done["settled"] == [task_id]
    assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED
    assert contracts.escrow.result_of(task_id) == RIGHT
    after = stakes(contracts, first)
    assert after[0] < before[0] and after[1] < before[1]  # both dissenters slashed
    assert after[2] == before[2]
    states = {r.provider.lower(): r.state for r in contracts.escrow.replicas(task_id)}
    assert states[first[2].address.lower()] == states[extra.address.lower()] == ReplicaState.AGREED

    index_chain(ctx=ctx)
    with Session(ctx.engine) as session:
        wrong = session.get(ProviderReputation, first[0].address.lower())
        right = session.get(ProviderReputation, extra.address.lower())
        assert wrong is not None and right is not None
        assert (wrong.dissents, wrong.streak) == (1, 0) and (right.dissents, right.streak) == (0, 1)
        assert right.score > wrong.score
        provider = session.get(Provider, extra.address.lower())
        assert provider is not None and provider.reputation == right.score  # what the matcher weighs
        shown = provider_ledger(session=session, address=first[0].address.lower())["reputation"]
        assert (shown["dissents"], shown["score"]) == (1, wrong.score)  # what the explorer shows


def test_no_room_to_escalate_fails_and_refunds(ctx: JobContext, contracts: Contracts,
                                               dev_accounts: DevAccounts) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    customer = dev_accounts.customer.address
    task_id = post_and_match(ctx, contracts, dev_accounts,
                             make_spec("no room", replicas=3, quorum=2, max_replicas=3))
    reveal(contracts, task_id, list(zip(accounts_of(dev_accounts, assigned(contracts, task_id)),
                                        (WRONG, OTHER, RIGHT), strict=True)))
    index_chain(ctx=ctx)
    refund_before = contracts.escrow.claimable(customer)
    outcome = settle_tasks(ctx=ctx)
    assert outcome["escalated"] == [] and outcome["settled"] == [task_id]
    assert contracts.escrow.get_task(task_id).state == TaskState.FAILED
    assert contracts.escrow.claimable(customer) > refund_before  # the customer's escrow came back
    with Session(ctx.engine) as session:
        requests = session.exec(select(ReplicaReplacement).where(ReplicaReplacement.task_id == task_id))
        assert requests.all() == []


def test_while_few_providers_are_trusted_a_trust_level_task_runs_as_three_replicas(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts) -> None:
    """The bootstrap: no provider is trusted yet (fewer than min_trusted_pool = 10), so the policy plans
    k = 3, q = 2 on any providers: two more replicas, whoever the matcher picks."""
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(ctx, contracts, dev_accounts,
                             make_spec("alone", replicas=1, quorum=1, trust="standard"))
    (primary,) = accounts_of(dev_accounts, assigned(contracts, task_id))
    reveal(contracts, task_id, [(primary, RIGHT)])
    index_chain(ctx=ctx)
    outcome = settle_tasks(ctx=ctx)
    assert outcome["escalated"] == [task_id] and outcome["matching"]["assigned"] == 1
    with Session(ctx.engine) as session:
        check = session.get(TaskCheck, task_id)
        assert check is not None and (check.kind, check.quorum) == ("bootstrap", 2)
    partners = accounts_of(dev_accounts, assigned(contracts, task_id)[1:])
    assert len(partners) == 2 and primary not in partners
    reveal(contracts, task_id, [(partners[0], RIGHT), (partners[1], WRONG)])
    index_chain(ctx=ctx)
    assert settle_tasks(ctx=ctx)["settled"] == [task_id]
    assert contracts.escrow.result_of(task_id) == RIGHT


def test_an_untrusted_provider_alone_gets_a_trusted_partner(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path) -> None:
    """Past the bootstrap, a primary not trusted to run alone is checked by one trusted partner, q = 2."""
    grown = make_ctx(ctx.engine, ctx.client, ctx.deployment, tmp_path, min_trusted_pool=2)
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(grown, contracts, dev_accounts,
                             make_spec("probation", replicas=1, quorum=1, trust="standard"))
    (primary,) = accounts_of(dev_accounts, assigned(contracts, task_id))
    others = [p for p in dev_accounts.providers if p.address != primary.address]
    reveal(contracts, task_id, [(primary, RIGHT)])
    index_chain(ctx=grown)
    plant_trusted(grown, others[:2])
    plant_trusted(grown, [primary])  # trusted to check others, but not to run alone
    outcome = settle_tasks(ctx=grown)
    assert outcome["escalated"] == [task_id] and outcome["matching"]["assigned"] == 1
    with Session(ctx.engine) as session:
        check = session.get(TaskCheck, task_id)
        assert check is not None and (check.kind, check.quorum) == ("partner", 2)
    (partner,) = accounts_of(dev_accounts, assigned(contracts, task_id)[1:])
    assert partner in others[:2]  # a trusted one, never the untrusted fourth
    reveal(contracts, task_id, [(partner, RIGHT)])
    index_chain(ctx=grown)
    assert settle_tasks(ctx=grown)["settled"] == [task_id]
    assert contracts.escrow.result_of(task_id) == RIGHT


def test_a_solo_provider_runs_alone_unless_the_price_outweighs_its_stake(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path) -> None:
    """The stake-versus-price rule: the same solo-trusted primary settles a cheap task alone (no spot check
    drawn at s = 0) but gets a trusted partner on one whose price is above its slashable stake / 8."""
    grown = make_ctx(ctx.engine, ctx.client, ctx.deployment, tmp_path, min_trusted_pool=2,
                     spot_check_rate=0.0)
    add_providers(ctx.engine, dev_accounts.providers)
    index_chain(ctx=grown)
    with Session(ctx.engine) as session:  # over what any provider's slash can answer for
        rows = session.exec(select(Provider)).all()
        dear_price = max(int(r.stake or 0) for r in rows) * contracts.escrow.param("slashDissentBps") \
            // 10_000 // 8 + GRID
    cheap = post_spec(contracts, ctx.engine, dev_accounts.customer,
                      make_spec("cheap", replicas=1, quorum=1, trust="standard", price=GRID))
    dear = post_spec(contracts, ctx.engine, dev_accounts.customer,
                     make_spec("dear", replicas=1, quorum=1, trust="standard", price=dear_price))
    index_chain(ctx=grown)
    run_matching_round(ctx=grown)
    (primary,) = accounts_of(dev_accounts, assigned(contracts, cheap))
    (primary_dear,) = accounts_of(dev_accounts, assigned(contracts, dear))
    others = [p for p in dev_accounts.providers if p.address not in (primary.address, primary_dear.address)]
    reveal(contracts, cheap, [(primary, RIGHT)])
    reveal(contracts, dear, [(primary_dear, RIGHT)])
    index_chain(ctx=grown)
    plant_trusted(grown, [primary, primary_dear], solo=True)
    plant_trusted(grown, others)
    outcome = settle_tasks(ctx=grown)
    assert outcome["settled"] == [cheap] and outcome["escalated"] == [dear]
    assert contracts.escrow.get_task(cheap).assigned == 1  # ran alone: one replica, one payment
    with Session(ctx.engine) as session:
        assert session.get(TaskCheck, cheap) is None
        check = session.get(TaskCheck, dear)
        assert check is not None and (check.kind, check.quorum) == ("partner", 2)
    (partner,) = accounts_of(dev_accounts, assigned(contracts, dear)[1:])
    assert partner in others
    reveal(contracts, dear, [(partner, RIGHT)])
    index_chain(ctx=grown)
    assert settle_tasks(ctx=grown)["settled"] == [dear]


def test_paranoid_asks_two_trusted_partners_and_unanimity_even_of_a_solo_provider(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path) -> None:
    grown = make_ctx(ctx.engine, ctx.client, ctx.deployment, tmp_path, min_trusted_pool=2)
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(grown, contracts, dev_accounts,
                             make_spec("paranoid", replicas=1, quorum=1, trust="paranoid"))
    assert contracts.escrow.get_task(task_id).max_replicas == 5
    (primary,) = accounts_of(dev_accounts, assigned(contracts, task_id))
    others = [p for p in dev_accounts.providers if p.address != primary.address]
    reveal(contracts, task_id, [(primary, RIGHT)])
    index_chain(ctx=grown)
    plant_trusted(grown, [primary], solo=True)
    plant_trusted(grown, others)
    outcome = settle_tasks(ctx=grown)
    assert outcome["escalated"] == [task_id] and outcome["matching"]["assigned"] == 1
    with Session(ctx.engine) as session:
        check = session.get(TaskCheck, task_id)
        assert check is not None and (check.kind, check.quorum) == ("partner", 3)
    partners = accounts_of(dev_accounts, assigned(contracts, task_id)[1:])
    assert len(partners) == 2
    reveal(contracts, task_id, [(partners[0], RIGHT), (partners[1], WRONG)])
    index_chain(ctx=grown)
    plant_trusted(grown, others)
    assert settle_tasks(ctx=grown)["escalated"] == [task_id]  # 2 of 3 is not unanimity: one more
    (third,) = accounts_of(dev_accounts, assigned(contracts, task_id)[3:])
    reveal(contracts, task_id, [(third, RIGHT)])
    index_chain(ctx=grown)
    assert settle_tasks(ctx=grown)["settled"] == [task_id]
    assert contracts.escrow.result_of(task_id) == RIGHT


def test_the_policy_view_is_filled_from_records(ctx: JobContext, contracts: Contracts,
                                                dev_accounts: DevAccounts) -> None:
    """Every field `plan` reads comes from a record: a field the builder left at its default fails here."""
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(ctx, contracts, dev_accounts,
                             make_spec("view", replicas=1, quorum=1, trust="high", price=3 * GRID))
    (primary,) = accounts_of(dev_accounts, assigned(contracts, task_id))
    index_chain(ctx=ctx)
    plant_trusted(ctx, list(dev_accounts.providers), solo=True)
    with Session(ctx.engine) as session:
        standing = standing_of(session, task_id, primary.address.lower(), verifier_step(ctx, 0))
        shown = provider_ledger(session=session, address=primary.address.lower())["reputation"]
    assert standing is not None
    assert (shown["trusted"], shown["solo"]) == (True, True)  # the explorer shows both bars
    defaults = Standing(trust_level="standard")
    for name in (f.name for f in fields(Standing)):
        assert getattr(standing, name) != getattr(defaults, name), name
    assert (standing.trust_level, standing.price, standing.trusted_pool) == ("high", 3 * GRID, 3)
    assert standing.slashable_stake == contracts.registry.stake_of(primary.address) * \
        contracts.escrow.param("slashDissentBps") // 10_000


def test_a_fixed_k_of_one_is_not_checked(ctx: JobContext, contracts: Contracts,
                                         dev_accounts: DevAccounts) -> None:
    """Room for escalation alone is not a trust level: the customer fixed k = 1, so one answer settles."""
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(ctx, contracts, dev_accounts,
                             make_spec("fixed one", replicas=1, quorum=1, max_replicas=3))
    (primary,) = accounts_of(dev_accounts, assigned(contracts, task_id))
    reveal(contracts, task_id, [(primary, RIGHT)])
    index_chain(ctx=ctx)
    assert settle_tasks(ctx=ctx)["settled"] == [task_id]
    with Session(ctx.engine) as session:
        assert session.get(TaskCheck, task_id) is None


def plant_trusted(ctx: JobContext, accounts: list[LocalAccount], *, solo: bool = False) -> None:
    """A long clean record, as if earned: trusted to check others, and with `solo` to run alone (the
    indexer refolds a provider's row when events touch it, so tests plant after indexing)."""
    streak = ReputationParams().solo_streak if solo else 40
    with Session(ctx.engine) as session:
        for account in accounts:
            session.merge(ProviderReputation(address=account.address.lower(), score=0.97, trusted=True,
                                             solo=solo, streak=streak, verified=streak))
        session.commit()


def test_a_spot_check_by_trusted_providers_catches_a_trusted_cheater(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path) -> None:
    always = make_ctx(ctx.engine, ctx.client, ctx.deployment, tmp_path, spot_check_rate=1.0,
                      min_trusted_pool=2)
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(always, contracts, dev_accounts,
                             make_spec("trusted alone", replicas=1, quorum=1, trust="standard"))
    (primary,) = accounts_of(dev_accounts, assigned(contracts, task_id))
    others = [p for p in dev_accounts.providers if p.address != primary.address]
    trusted, untrusted = [primary, *others[:2]], others[2]
    with Session(ctx.engine) as session:  # the untrusted one is the matcher's favourite on price
        row = session.get(Provider, untrusted.address.lower())
        assert row is not None
        row.prices = {"fixed": "1", "per_cpu_second": "1"}
        session.add(row)
        session.commit()
    reveal(contracts, task_id, [(primary, WRONG)])
    index_chain(ctx=always)
    plant_trusted(always, trusted)
    plant_trusted(always, [primary], solo=True)
    assert settle_tasks(ctx=always)["escalated"] == [task_id]
    with Session(ctx.engine) as session:
        check = session.get(TaskCheck, task_id)
        assert check is not None and check.kind == "spot_check"
    (checker,) = accounts_of(dev_accounts, assigned(contracts, task_id)[1:])
    reveal(contracts, task_id, [(checker, RIGHT)])
    index_chain(ctx=always)
    plant_trusted(always, trusted)
    # one against one: a tie, so one more replica decides
    assert settle_tasks(ctx=always)["escalated"] == [task_id]
    (third,) = accounts_of(dev_accounts, assigned(contracts, task_id)[2:])
    assert {checker.address, third.address} == {a.address for a in others[:2]}  # trusted checkers only
    assert untrusted.address.lower() not in assigned(contracts, task_id)
    reveal(contracts, task_id, [(third, RIGHT)])
    index_chain(ctx=always)
    stake_before = contracts.registry.stake_of(primary.address)
    assert settle_tasks(ctx=always)["settled"] == [task_id]
    assert contracts.escrow.result_of(task_id) == RIGHT
    assert contracts.registry.stake_of(primary.address) < stake_before
    index_chain(ctx=always)
    with Session(ctx.engine) as session:
        record = session.get(ProviderReputation, primary.address.lower())
        assert record is not None
        assert (record.caught, record.trusted, record.streak) == (1, False, 0)  # the record is wiped


def test_a_canary_answered_wrongly_gets_its_provider_slashed(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    # a real task, verified by three agreeing providers: its hash becomes the canary's known answer
    data = "da" * 32
    spec = make_spec("real work", replicas=3, quorum=2, max_replicas=3).model_copy(
        update={"inputs": [InputBlob(path="data.txt", sha256=data, size=3)]})
    real = post_and_match(ctx, contracts, dev_accounts, spec)
    reveal(contracts, real, [(a, RIGHT) for a in accounts_of(dev_accounts, assigned(contracts, real))])
    index_chain(ctx=ctx)
    assert settle_tasks(ctx=ctx)["settled"] == [real]
    index_chain(ctx=ctx)

    with Session(ctx.engine) as session:  # the real customer uploaded its input: the canary reuses its claim
        session.add(BlobClaim(sha256=data, holder=dev_accounts.customer.address.lower()))
        session.commit()
    # the protocol's canary wallets (from the dev canary key), funded as the DAO would
    wallets = fund_canary_wallets(contracts, DEV_CANARY_KEY, 2, sender=dev_accounts.deployer)
    canaries = make_ctx(ctx.engine, ctx.client, ctx.deployment, tmp_path, canary_rate=1.0,
                        canary_key=DEV_CANARY_KEY, canary_wallets=2, canary_mean_delay_s=0)
    posted = post_canaries(ctx=canaries)["posted"]
    assert len(posted) == 1 and post_canaries(ctx=canaries)["posted"] == []  # one per settled real task
    task_id = posted[0]
    on_chain = contracts.escrow.get_task(task_id)
    assert on_chain.customer in wallets and (on_chain.replicas, on_chain.max_replicas) == (1, 3)
    assert contracts.escrow.spec_hash_of(task_id) != contracts.escrow.spec_hash_of(real)
    with Session(ctx.engine) as session:
        check = session.get(TaskCheck, task_id)
        assert check is not None and (check.kind, check.expected_hash, check.source_task) == (
            "canary", "0x" + RIGHT.hex(), real)
        assert session.get(BlobClaim, (data, on_chain.customer.lower())) is not None

    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    (cheater,) = accounts_of(dev_accounts, assigned(contracts, task_id))
    assert cheater.address.lower() not in assigned(contracts, real)  # it never saw the answer
    reveal(contracts, task_id, [(cheater, WRONG)])
    index_chain(ctx=ctx)
    outcome = settle_tasks(ctx=ctx)
    assert outcome["escalated"] == [task_id]
    assert outcome["matching"]["assigned"] == 1
    checkers = accounts_of(dev_accounts, assigned(contracts, task_id)[1:])
    assert len(checkers) == 2  # the known answer must lead: two against the cheater's one
    reveal(contracts, task_id, [(account, RIGHT) for account in checkers])
    index_chain(ctx=ctx)
    stake_before = contracts.registry.stake_of(cheater.address)
    assert settle_tasks(ctx=ctx)["settled"] == [task_id]
    assert contracts.escrow.result_of(task_id) == RIGHT
    assert contracts.registry.stake_of(cheater.address) < stake_before
    index_chain(ctx=ctx)
    with Session(ctx.engine) as session:
        record = session.get(ProviderReputation, cheater.address.lower())
        assert record is not None and record.caught == 1 and not record.trusted


def test_a_provider_gone_mid_task_is_replaced_the_task_completes_and_the_no_show_is_slashed(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(ctx, contracts, dev_accounts,
                             make_spec("one dies", replicas=2, quorum=2, max_replicas=3))
    dead, alive = accounts_of(dev_accounts, assigned(contracts, task_id))
    set_heartbeat(ctx.engine, dead, stale(ctx.settings.heartbeat_ttl_s))  # killed: its heartbeats stop
    # the live replica is still running: a new round now would shut it out (commits are per round)
    assert expire_heartbeats(ctx=ctx)["new"] == 1
    assert contracts.escrow.get_task(task_id).assigned == 2
    salt = os.urandom(32)
    contracts.escrow.commit(task_id, commitment_for(RIGHT, salt, alive.address), sender=alive)
    index_chain(ctx=ctx)
    # once it committed, the replacement goes out
    expire_heartbeats(ctx=ctx)
    assert contracts.escrow.get_task(task_id).round == 2
    (newcomer,) = accounts_of(dev_accounts, assigned(contracts, task_id)[2:])
    assert newcomer.address not in (dead.address, alive.address)
    reveal(contracts, task_id, [(newcomer, RIGHT)])
    contracts.escrow.reveal(task_id, RIGHT, salt, sender=alive)
    index_chain(ctx=ctx)
    stake_before = contracts.registry.stake_of(dead.address)
    assert settle_tasks(ctx=ctx)["settled"] == [task_id]  # no wait for the dead round-1 replica
    assert contracts.escrow.result_of(task_id) == RIGHT
    states = {r.provider.lower(): r.state for r in contracts.escrow.replicas(task_id)}
    assert states[dead.address.lower()] == ReplicaState.NO_SHOW
    assert states[alive.address.lower()] == states[newcomer.address.lower()] == ReplicaState.AGREED
    assert contracts.registry.stake_of(dead.address) < stake_before  # penalised
    index_chain(ctx=ctx)
    with Session(ctx.engine) as session:
        record = session.get(ProviderReputation, dead.address.lower())
        assert record is not None and record.no_shows == 1 and record.score < 0.5


def test_a_trust_level_primary_replaced_after_a_no_show_is_checked_like_the_first(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts) -> None:
    """A primary that takes a trust-level task and vanishes must not hand it to a replacement that then runs
    it unchecked: the replacement's answer gets the policy's plan too (here the bootstrap's partners)."""
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(ctx, contracts, dev_accounts,
                             make_spec("vanishes", replicas=1, quorum=1, trust="standard"))
    (dead,) = accounts_of(dev_accounts, assigned(contracts, task_id))
    set_heartbeat(ctx.engine, dead, stale(ctx.settings.heartbeat_ttl_s))
    assert expire_heartbeats(ctx=ctx)["new"] == 1
    assert contracts.escrow.get_task(task_id).round == 2
    (newcomer,) = accounts_of(dev_accounts, assigned(contracts, task_id)[1:])
    reveal(contracts, task_id, [(newcomer, RIGHT)])
    index_chain(ctx=ctx)
    outcome = settle_tasks(ctx=ctx)
    assert outcome["escalated"] == [task_id] and outcome["settled"] == []
    with Session(ctx.engine) as session:
        check = session.get(TaskCheck, task_id)
        assert check is not None and (check.kind, check.quorum) == ("bootstrap", 2)
    (partner,) = accounts_of(dev_accounts, assigned(contracts, task_id)[2:])  # the room the escrow left
    reveal(contracts, task_id, [(partner, RIGHT)])
    index_chain(ctx=ctx)
    assert settle_tasks(ctx=ctx)["settled"] == [task_id]
    assert contracts.escrow.result_of(task_id) == RIGHT


def test_a_settle_pass_reads_the_chain_only_for_tasks_the_index_says_may_be_ready(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts) -> None:
    add_providers(ctx.engine, dev_accounts.providers)
    task_id = post_and_match(ctx, contracts, dev_accounts,
                             make_spec("pending", replicas=2, quorum=2, max_replicas=2))
    now = ctx.client.timestamp()
    deadline = contracts.escrow.get_task(task_id).commit_deadline
    with Session(ctx.engine) as session:
        assert maybe_ready(session, [task_id], now=now) == []  # nobody committed yet
        assert maybe_ready(session, [task_id], now=deadline + 1) == [task_id]  # the window closed
    reveal(contracts, task_id, [(a, RIGHT) for a in accounts_of(dev_accounts, assigned(contracts, task_id))])
    with Session(ctx.engine) as session:
        assert maybe_ready(session, [task_id], now=now) == []  # the index has not seen the reveals yet
    index_chain(ctx=ctx)
    with Session(ctx.engine) as session:
        assert maybe_ready(session, [task_id], now=now) == [task_id]


def test_canaries_look_like_real_tasks_to_a_provider(
        ctx: JobContext, contracts: Contracts, dev_accounts: DevAccounts, tmp_path: Path) -> None:
    """What a provider can observe of a canary: its customer, spec, price, who else ran it, when it came.
    Customers rotate among the canary wallets, specs are real and never repeated, the price is one a real
    customer offered for that kind of spec, and no provider gets a canary of a task it ran."""
    add_providers(ctx.engine, dev_accounts.providers)
    prices = [GRID, 2 * GRID, 3 * GRID, 5 * GRID, 8 * GRID, 13 * GRID]
    real = []
    for i, price in enumerate(prices):
        real.append(post_spec(contracts, ctx.engine, dev_accounts.customer,
                              make_spec(f"real {i}", replicas=1, quorum=1, price=price)))
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    ran = {t: assigned(contracts, t) for t in real}
    for task_id in real:
        reveal(contracts, task_id, [(accounts_of(dev_accounts, ran[task_id])[0], RIGHT)])
    index_chain(ctx=ctx)
    assert sorted(settle_tasks(ctx=ctx)["settled"]) == sorted(real)
    index_chain(ctx=ctx)

    wallets = fund_canary_wallets(contracts, DEV_CANARY_KEY, 3, sender=dev_accounts.deployer)
    canaries = make_ctx(ctx.engine, ctx.client, ctx.deployment, tmp_path, canary_rate=1.0,
                        canary_key=DEV_CANARY_KEY, canary_wallets=3, canary_mean_delay_s=0)
    posted = post_canaries(ctx=canaries, rng=random.Random(3))["posted"]
    assert len(posted) == len(real)
    assert post_canaries(ctx=canaries)["posted"] == []  # every real spec used once: none repeats
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)

    real_hashes = {contracts.escrow.spec_hash_of(t) for t in real}
    seen_customers, seen_hashes = set(), set()
    with Session(ctx.engine) as session:
        for task_id in posted:
            on_chain = contracts.escrow.get_task(task_id)
            seen_customers.add(on_chain.customer)
            digest = contracts.escrow.spec_hash_of(task_id)
            assert digest not in real_hashes and digest not in seen_hashes
            seen_hashes.add(digest)
            assert on_chain.max_price_per_replica in prices  # a price real customers set
            check = session.get(TaskCheck, task_id)
            assert check is not None and check.source_task in real
            source = session.get(Task, check.source_task)
            assert source is not None
            # the spec a provider fetches is a real one, in the same form as a real adaptive task's
            row = session.get(SpecRecord, (digest.hex(), on_chain.customer.lower()))
            assert row is not None
            document = TaskSpec.model_validate(row.spec)
            assert document.command == ["true"] and document.name.startswith("real ")
            standard = spec_document(make_spec("x", replicas=1, quorum=1, trust="standard"))
            assert set(row.spec) == set(standard)
            holders = assigned(contracts, task_id)
            assert holders and not set(holders) & set(ran[check.source_task])
    assert len(seen_customers) > 1 and seen_customers <= set(wallets)
    # a wallet claims what its settled canaries left it before it posts again (no hoard of unclaimed refunds)
    first = next(t for t in posted if contracts.escrow.get_task(t).customer == wallets[0])
    (primary,) = accounts_of(dev_accounts, assigned(contracts, first))
    reveal(contracts, first, [(primary, RIGHT)])
    index_chain(ctx=ctx)
    assert first in settle_tasks(ctx=ctx)["settled"]
    assert contracts.escrow.claimable(wallets[0]) > 0
    real_more = post_spec(contracts, ctx.engine, dev_accounts.customer,
                          make_spec("real more", replicas=1, quorum=1, price=GRID))
    index_chain(ctx=ctx)
    run_matching_round(ctx=ctx)
    reveal(contracts, real_more, [(accounts_of(dev_accounts, assigned(contracts, real_more))[0], RIGHT)])
    index_chain(ctx=ctx)
    settle_tasks(ctx=ctx)
    index_chain(ctx=ctx)
    one_wallet = make_ctx(ctx.engine, ctx.client, ctx.deployment, tmp_path, canary_rate=1.0,
                          canary_key=DEV_CANARY_KEY, canary_wallets=1, canary_mean_delay_s=0)
    assert canary_accounts(DEV_CANARY_KEY, 1)[0].address == wallets[0]  # the same first wallet
    assert len(post_canaries(ctx=one_wallet)["posted"]) == 1
    assert contracts.escrow.claimable(wallets[0]) == 0
    assert dev_accounts.customer.address not in seen_customers
    drawn = [contracts.escrow.get_task(t).max_price_per_replica for t in posted]
    assert len(set(drawn)) > 1
    assert {a.address for a in canary_accounts(DEV_CANARY_KEY, 3)} == set(wallets)


def test_canaries_are_posted_at_poisson_times_not_in_bursts() -> None:
    """Each owed canary is posted in a pass with probability 1 - exp(-interval/mean): a delay that is
    exponential (memoryless) after it falls due, so a provider cannot align canaries with settlements."""
    rng = random.Random(7)
    first = to_post_now(1_000, interval_s=5, mean_delay_s=300, rng=rng)
    assert 5 < first < 40  # ~16.5 expected of 1,000 owed: not a burst
    delays = []
    for _ in range(400):  # one owed canary, pass after pass: the pass it goes out in
        passes = 1
        while not to_post_now(1, interval_s=5, mean_delay_s=300, rng=rng):
            passes += 1
        delays.append(passes * 5)
    mean = sum(delays) / len(delays)
    assert 240 < mean < 370  # exponential with mean ~300 s (+ half a pass)
    assert sum(d > 600 for d in delays) / len(delays) < 0.25  # P(delay > 2 means) = e^-2 = 0.14
    assert to_post_now(4, interval_s=5, mean_delay_s=0, rng=rng) == 4
    assert to_post_now(0, interval_s=5, mean_delay_s=300, rng=rng) == 0
