"""Dev-network helpers shared by the demo, the tests and the gas benchmark: anvil's dev accounts in their
roles, funding and staking them, and playing one task's on-chain life (post, assign, commit, reveal,
finalize from the settler's reports, then claim the credits finalize left so wallets show the outcome).

DEV-ONLY: these use anvil's publicly known keys (hashgrid.config.ANVIL_DEV_KEYS).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.types import TxReceipt

from hashgrid.chain.contracts import Contracts, TaskTerms, accepted_result, commitment_for
from hashgrid.config import ANVIL_DEV_KEYS

GRID = 10**18


@dataclass(frozen=True)
class DevAccounts:
    """Key 0 deploys and acts as the marketplace (matcher, settler); key 1 is the customer; keys 2-5 the
    providers; keys 6-9 are spare (never funded here: handy as an unstaked provider or a stranger)."""

    deployer: LocalAccount
    customer: LocalAccount
    providers: tuple[LocalAccount, ...]
    spare: tuple[LocalAccount, ...]

    @classmethod
    def from_keys(cls, keys: Sequence[str] = ANVIL_DEV_KEYS, providers: int = 4) -> DevAccounts:
        accounts = [Account.from_key(k) for k in keys]
        return cls(
            accounts[0], accounts[1], tuple(accounts[2 : 2 + providers]), tuple(accounts[2 + providers :])
        )


def fund(
    contracts: Contracts,
    accounts: DevAccounts,
    *,
    customer_amount: int = 100_000 * GRID,
    provider_amount: int = 10_000 * GRID,
) -> None:
    """Send GRID from the deployer to the customer and each provider."""
    token = contracts.token
    token.transfer(accounts.customer.address, customer_amount, sender=accounts.deployer)
    for provider in accounts.providers:
        token.transfer(provider.address, provider_amount, sender=accounts.deployer)


def fund_canary_wallets(contracts: Contracts, key: str, count: int, *, sender: LocalAccount,
                        grid: int = 1_000 * GRID, eth: int = 10**18) -> list[str]:
    """Fund the protocol's canary wallets (derived from `key`, as the marketplace derives them) with gas and
    GRID from `sender`, as the DAO would on a real network. Their addresses."""
    from marketplace.jobs.canary import canary_accounts

    addresses: list[str] = [a.address for a in canary_accounts(key, count)]
    for address in addresses:
        contracts.client.send_transaction({"to": address, "value": eth}, sender=sender)
        contracts.token.transfer(address, grid, sender=sender)
    return addresses


def stake_provider(
    contracts: Contracts, provider: LocalAccount, amount: int, *, capabilities_uri: str = ""
) -> None:
    """Register a provider (as its own operator) and stake `amount` with approve + stake."""
    uri = capabilities_uri or f"hashgrid://dev/{provider.address.lower()}"
    contracts.registry.register(provider.address, keccak(text=uri), uri, sender=provider)
    contracts.token.approve(contracts.registry.address, amount, sender=provider)
    contracts.registry.stake(amount, sender=provider)


def spec_hash_of(text: str) -> bytes:
    """A stand-in spec hash for dev tasks (real specs hash their canonical JSON)."""
    return keccak(text=text)


@dataclass
class ReplicaPlan:
    """What one assigned provider does: the result hash it reveals and what billing pays it if it agrees."""

    provider: LocalAccount
    result_hash: bytes
    payment: int = 0
    salt: bytes = field(default_factory=lambda: os.urandom(32))


@dataclass
class TaskRun:
    task_id: int
    receipts: dict[str, list[TxReceipt]] = field(default_factory=dict)

    def gas(self, step: str) -> int:
        return sum(int(r["gasUsed"]) for r in self.receipts.get(step, []))


def post(
    contracts: Contracts,
    customer: LocalAccount,
    spec_hash: bytes,
    *,
    replicas: int,
    quorum: int,
    max_price: int,
    max_replicas: int | None = None,
    permit: bool = False,
    deadline: int | None = None,
) -> tuple[int, TxReceipt]:
    """Post a task (approve then postTask, or postTaskWithPermit); returns its id and the post receipt."""
    escrow = contracts.escrow
    terms = TaskTerms(
        spec_hash=spec_hash,
        replicas=replicas,
        quorum=quorum,
        max_replicas=max_replicas or replicas,
        max_price_per_replica=max_price,
        deadline=deadline or contracts.client.timestamp() + 24 * 3600,
    )
    if permit:
        receipt = escrow.post_task_with_permit(contracts.token, terms, sender=customer)
    else:
        amount = escrow.escrow_for(terms.max_replicas, max_price)
        contracts.token.approve(escrow.address, amount, sender=customer)
        receipt = escrow.post_task(terms, sender=customer)
    return escrow.task_id_of(receipt), receipt


def play_task(
    contracts: Contracts,
    *,
    customer: LocalAccount,
    operator: LocalAccount,
    spec_hash: bytes,
    plans: Sequence[ReplicaPlan],
    quorum: int,
    max_price: int,
    max_replicas: int | None = None,
    permit: bool = False,
    claim: bool = True,
) -> TaskRun:
    """The whole life of one task with one transaction per step and per replica. Finalize only credits
    payments, refunds and the fee; with `claim` the operator then pushes every credit of the customer, the
    plan's providers and the treasury to their wallets (claimFor), one transaction per payee."""
    escrow = contracts.escrow
    task_id, post_receipt = post(
        contracts,
        customer,
        spec_hash,
        replicas=len(plans),
        quorum=quorum,
        max_price=max_price,
        max_replicas=max_replicas,
        permit=permit,
    )
    run = TaskRun(task_id, {"post": [post_receipt]})
    run.receipts["assign"] = [escrow.assign(task_id, [p.provider.address for p in plans], sender=operator)]
    run.receipts["commit"] = [
        escrow.commit(task_id, commitment_for(p.result_hash, p.salt, p.provider.address), sender=p.provider)
        for p in plans
    ]
    run.receipts["reveal"] = [escrow.reveal(task_id, p.result_hash, p.salt, sender=p.provider) for p in plans]
    reports = escrow.build_reports(task_id, {p.provider.address: p.payment for p in plans})
    run.receipts["finalize"] = [escrow.finalize(task_id, reports, sender=operator)]
    if claim:
        payees = [customer.address, *(p.provider.address for p in plans), escrow.treasury()]
        run.receipts["claim"] = claim_all(contracts, payees, sender=operator)
    return run


def claim_all(contracts: Contracts, accounts: Iterable[str], *, sender: LocalAccount) -> list[TxReceipt]:
    """Push the escrow credits of each account holding some to its wallet (claimFor, sent by `sender`)."""
    escrow = contracts.escrow
    receipts = []
    for account in dict.fromkeys(accounts):
        if escrow.claimable(account) > 0:
            receipts.append(escrow.claim_for(account, sender=sender))
    return receipts


def accepted_hash(result_hashes: Sequence[bytes], quorum: int) -> bytes | None:
    """The hash at least `quorum` replicas agree on (what finalize will accept), else None."""
    return accepted_result(result_hashes, quorum)
