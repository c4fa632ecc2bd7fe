"""The few escrow and registry calls the jobs make, bound straight from the deployment's ABIs (so the jobs do
not depend on the Python bindings' details), plus decoding a receipt's events for the indexer's apply."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from eth_utils import to_checksum_address
from web3.types import TxReceipt

from hashgrid.chain.client import ChainClient
from hashgrid.chain.deployment import Deployment
from marketplace.indexer.events import ESCROW, REGISTRY, DecodedEvent, EventDecoder

MIN_STAKE_TTL_S = 10.0


def sort_providers(providers: Sequence[str]) -> list[str]:
    """Addresses sorted as the escrow wants them (by numeric value), checksummed for sending."""
    return [to_checksum_address(p) for p in sorted(providers, key=lambda a: int(a, 16))]


class ChainOps:
    """Escrow writes (assign, assignMany, expire) and views the jobs need."""

    def __init__(self, client: ChainClient, deployment: Deployment) -> None:
        self.client = client
        self.deployment = deployment
        self.decoder = EventDecoder(deployment)
        escrow_abi = deployment.abis[ESCROW]
        registry_abi = deployment.abis[REGISTRY]
        client.decoder.add_abi(escrow_abi)
        client.decoder.add_abi(registry_abi)
        self.escrow = client.w3.eth.contract(address=to_checksum_address(deployment.address(ESCROW)),
                                             abi=escrow_abi)
        self.registry = client.w3.eth.contract(address=to_checksum_address(deployment.address(REGISTRY)),
                                               abi=registry_abi)
        get_task = next(i for i in escrow_abi if i.get("type") == "function" and i.get("name") == "getTask")
        self._task_fields = [c["name"] for c in get_task["outputs"][0].get("components", [])]
        self._min_stake: tuple[float, int] | None = None  # (when read, value)

    # ------------------------------------------------------------------ views
    def min_stake(self) -> int:
        """The registry's minStake, read at most every MIN_STAKE_TTL_S (a matching round asked the chain
        each time, for a DAO parameter that seldom changes). A stale value only misroutes for that long, and
        the chain has the last word: an assign to a provider below the new minimum reverts and is skipped."""
        now = time.monotonic()
        if self._min_stake is None or now - self._min_stake[0] >= MIN_STAKE_TTL_S:
            self._min_stake = (now, int(self.client.call(self.registry.functions.minStake())))
        return self._min_stake[1]

    def expiry_grace(self) -> int:
        return int(self.client.call(self.escrow.functions.expiryGrace()))

    def task(self, task_id: int) -> dict[str, Any]:
        """getTask as a dict keyed by the struct's field names."""
        raw = self.client.call(self.escrow.functions.getTask(task_id))
        return dict(zip(self._task_fields, raw, strict=False))

    # ------------------------------------------------------------------ writes
    def assign_many(self, task_ids: Sequence[int], providers: Sequence[Sequence[str]], *,
                    sender: str) -> TxReceipt:
        fn = self.escrow.functions.assignMany(
            list(task_ids), [[to_checksum_address(p) for p in group] for group in providers]
        )
        return self.client.transact(fn, sender=sender)

    def expire(self, task_id: int, providers: Sequence[str], *, sender: str) -> TxReceipt:
        return self.client.transact(
            self.escrow.functions.expire(task_id, sort_providers(providers)), sender=sender
        )

    def receipt_events(self, receipt: TxReceipt) -> list[DecodedEvent]:
        """The escrow and registry events in a receipt, decoded like the indexer decodes logs."""
        decoded = [self.decoder.decode(log) for log in receipt["logs"]]
        return [e for e in decoded if e is not None]
