"""Tasks played on the real anvil up to the point where the settler takes over (posted, assigned,
committed, revealed), with signed usage reports made by provider.daemon.usage_report, the function the
real daemon signs with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from billing.prices import PriceSheet
from billing.usage import ReplicaInput, UsageSettlement, settle_usage
from hashgrid.chain.contracts import Contracts, accepted_result, commitment_for
from provider.daemon import usage_report
from scripts.devnet import DevAccounts, post, spec_hash_of

GRID = 10**18
MAX_PRICE = GRID // 10
SHEETS = (
    PriceSheet(fixed=10**15, per_cpu_second=10**13, per_gb_second=10**12, per_gpu_second=10**15),
    PriceSheet(fixed=2 * 10**15, per_cpu_second=3 * 10**13, per_gb_second=7 * 10**11, per_gpu_second=0),
    PriceSheet(fixed=5 * 10**14, per_cpu_second=2 * 10**13, per_gb_second=10**12, per_gpu_second=10**15),
    PriceSheet(fixed=10**15, per_cpu_second=10**13, per_gb_second=10**12, per_gpu_second=10**15),
)


@dataclass
class PlayedTask:
    task_id: int
    result_hash: bytes
    providers: list[LocalAccount]
    plan: UsageSettlement


def usage_of(cpu: float) -> dict[str, float]:
    return {"wall_seconds": 3.0, "cpu_seconds": cpu, "memory_gb_seconds": 0.75, "gpu_seconds": 0.0,
            "peak_memory_mb": 256.0}


def play_to_reveal(contracts: Contracts, accounts: DevAccounts, *, cpus: Sequence[float] = (1.5, 1.6, 40.0),
                   results: Sequence[bytes] | None = None, max_price: int = MAX_PRICE,
                   label: str = "") -> PlayedTask:
    """Post a task for len(cpus) providers, assign, commit and reveal; then plan billing from each
    provider's signed usage report (provider i claims cpus[i] CPU-seconds)."""
    escrow, operator = contracts.escrow, accounts.deployer
    providers = list(accounts.providers[: len(cpus)])
    accepted = bytes.fromhex(os.urandom(32).hex())
    hashes = list(results) if results is not None else [accepted] * len(providers)
    quorum = 2 if len(providers) > 1 else 1
    spec = spec_hash_of(f"billing test {label} {os.urandom(4).hex()}")
    task_id, _ = post(contracts, accounts.customer, spec, replicas=len(providers), quorum=quorum,
                      max_price=max_price)
    escrow.assign(task_id, [p.address for p in providers], sender=operator)
    salts = [os.urandom(32) for _ in providers]
    for p, h, s in zip(providers, hashes, salts, strict=True):
        escrow.commit(task_id, commitment_for(h, s, p.address), sender=p)
    for p, h, s in zip(providers, hashes, salts, strict=True):
        escrow.reveal(task_id, h, s, sender=p)
    replicas = [
        ReplicaInput(p.address, h, SHEETS[i],
                     usage_report(p.key.hex(), task_id=task_id, provider=p.address, usage=usage_of(cpus[i]),
                                  result_hash=h))
        for i, (p, h) in enumerate(zip(providers, hashes, strict=True))
    ]
    plan = settle_usage(task_id=task_id, accepted_hash=accepted_result(hashes, quorum), cap=max_price,
                        replicas=replicas)
    return PlayedTask(task_id, accepted, providers, plan)
