"""Every on-chain read and write the provider daemon makes, in one place.

Escrow v2: a replica is one slot read with replicaOf(taskId, provider); getTask carries the current round's
size and commit count (so whether reveals are open is one read); the spec hash lives only in TaskPosted; what
finalize pays is credited in the escrow and withdrawn with claim.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_utils import event_abi_to_log_topic, to_checksum_address
from web3.types import TxReceipt

from hashgrid.chain.contracts import Contracts, ReplicaState, TaskState, commitment_for
from hashgrid.errors import NotFound

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x" + "0" * 40


@dataclass(frozen=True)
class AssignmentEvent:
    """One TaskAssigned naming this provider (v2's event has only the indexed taskId and provider)."""

    task_id: int
    block_number: int
    log_index: int
    tx_hash: str


@dataclass(frozen=True)
class TaskView:
    """What the daemon needs of a task: its state, the current round's deadlines (unix seconds) and how many
    of the round's replicas committed."""

    task_id: int
    state: TaskState
    commit_deadline: int
    reveal_deadline: int
    round: int = 0
    round_size: int = 0
    round_committed: int = 0


@dataclass(frozen=True)
class CommitItem:
    task_id: int
    result_hash: bytes
    salt: bytes


def _tx_hash(receipt: TxReceipt) -> str:
    return "0x" + bytes(receipt["transactionHash"]).hex()


class ChainOps:
    """The provider's chain access, bound to one deployment and one signing key."""

    def __init__(self, contracts: Contracts, private_key: str) -> None:
        self.contracts = contracts
        self.client = contracts.client
        self._key = private_key
        self.address = to_checksum_address(Account.from_key(private_key).address)
        self._assigned_topic = self._event_topic("TaskAssigned")

    def _event_topic(self, name: str) -> bytes:
        for item in self.contracts.escrow.abi:
            if item.get("type") == "event" and item.get("name") == name:
                return bytes(event_abi_to_log_topic(item))  # type: ignore[arg-type]
        raise NotFound(f"the escrow ABI has no event {name}")

    # ------------------------------------------------------------------ time and blocks
    def block_number(self) -> int:
        return self.client.block_number()

    def now(self) -> int:
        """The latest block's timestamp: the clock the escrow's deadlines are measured by."""
        return self.client.timestamp()

    @property
    def escrow_address(self) -> str:
        return self.contracts.escrow.address

    # ------------------------------------------------------------------ registry
    def stake(self) -> tuple[int, int]:
        """(this provider's stake, the registry's minimum stake)."""
        registry = self.contracts.registry
        return registry.stake_of(self.address), registry.min_stake()

    def ensure_registered(self, capabilities_hash: bytes, uri: str) -> bool:
        """Register (or update) the capabilities hash and URI; sends nothing when they are already current.

        Keeps an operator set earlier; a provider never registered before is its own operator.
        """
        registry = self.contracts.registry
        current_hash, current_uri = registry.capabilities_of(self.address)
        operator = registry.operator_of(self.address)
        if current_hash == capabilities_hash and current_uri == uri and operator.lower() != ZERO_ADDRESS:
            return False
        if operator.lower() == ZERO_ADDRESS:
            operator = self.address
        registry.register(operator, capabilities_hash, uri, sender=self._key)
        return True

    # ------------------------------------------------------------------ assignments and tasks
    def assignments(self, from_block: int, to_block: int) -> list[AssignmentEvent]:
        """TaskAssigned events naming this provider in [from_block, to_block], filtered at the node by the
        indexed provider topic."""
        if to_block < from_block:
            return []
        provider_topic = "0x" + (bytes(12) + bytes.fromhex(self.address[2:])).hex()
        params = {"address": self.escrow_address, "fromBlock": from_block, "toBlock": to_block,
                  "topics": ["0x" + self._assigned_topic.hex(), None, provider_topic]}
        logs = self.client._guarded(lambda: self.client.w3.eth.get_logs(params))  # type: ignore[arg-type]
        found = [AssignmentEvent(task_id=int.from_bytes(bytes(raw["topics"][1]), "big"),
                                 block_number=int(raw["blockNumber"]), log_index=int(raw["logIndex"]),
                                 tx_hash="0x" + bytes(raw["transactionHash"]).hex())
                 for raw in logs]
        return sorted(found, key=lambda event: (event.block_number, event.log_index))

    def spec_hash_of(self, task_id: int) -> bytes:
        """The task's specHash, from its TaskPosted event (the escrow does not store it)."""
        posted = self.contracts.escrow.events(0, "latest", names=["TaskPosted"], first_indexed=task_id)
        if not posted:
            raise NotFound(f"no TaskPosted event for task {task_id}", task_id=task_id)
        return bytes(posted[0].args["specHash"])

    def task(self, task_id: int) -> TaskView:
        """The task's state, current round deadlines and commit count (getTask)."""
        task = self.contracts.escrow.get_task(task_id)
        return TaskView(task_id=task_id, state=task.state, commit_deadline=task.commit_deadline,
                        reveal_deadline=task.reveal_deadline, round=task.round, round_size=task.round_size,
                        round_committed=task.round_committed)

    def my_replica_state(self, task_id: int) -> ReplicaState:
        """This provider's replica state in the task (NONE when not assigned): replicaOf(taskId, provider)."""
        return self.contracts.escrow.replica_of(task_id, self.address).state

    def reveal_open(self, task: TaskView) -> bool:
        """Whether a reveal would be accepted now: every replica of the current round committed
        (roundCommitted == roundSize in getTask), or the round's commit deadline passed."""
        if task.state != TaskState.ASSIGNED:
            return False
        if self.now() > task.commit_deadline:
            return True
        return task.round_size > 0 and task.round_committed >= task.round_size

    def commit_tx_of(self, task_id: int) -> str | None:
        """The transaction of this provider's ResultCommitted in the task (to recover a journal behind the
        chain), or None."""
        return self._my_event_tx(task_id, "ResultCommitted")

    def reveal_tx_of(self, task_id: int) -> str | None:
        return self._my_event_tx(task_id, "ResultRevealed")

    def my_event_count(self, task_id: int, name: str) -> int:
        """How many `name` events (ResultCommitted, ResultRevealed) this provider has in the task."""
        return len(self.contracts.escrow.events(0, "latest", names=[name], first_indexed=task_id,
                                                provider=self.address))

    def _my_event_tx(self, task_id: int, name: str) -> str | None:
        events = self.contracts.escrow.events(0, "latest", names=[name], first_indexed=task_id,
                                              provider=self.address)
        return events[-1].tx_hash if events else None

    # ------------------------------------------------------------------ credits
    def claimable(self) -> int:
        """What finalize credited this provider in the escrow and it has not claimed yet."""
        return self.contracts.escrow.claimable(self.address)

    def claim(self) -> tuple[int, str]:
        """Withdraw this provider's escrow credits to its wallet: (amount, tx hash)."""
        escrow = self.contracts.escrow
        receipt = escrow.claim(sender=self._key)
        return escrow.claimed_amount(receipt), _tx_hash(receipt)

    # ------------------------------------------------------------------ commit and reveal
    def commitment(self, result_hash: bytes, salt: bytes) -> bytes:
        return commitment_for(result_hash, salt, self.address)

    def commit(self, items: Sequence[CommitItem]) -> str:
        """Commit one task (commit) or several in one transaction (commitMany); returns the tx hash.
        A revert raises the escrow's named error (the whole batch reverts together)."""
        escrow = self.contracts.escrow
        commitments = [self.commitment(item.result_hash, item.salt) for item in items]
        if len(items) == 1:
            receipt = escrow.commit(items[0].task_id, commitments[0], sender=self._key)
        else:
            receipt = escrow.commit_many([item.task_id for item in items], commitments, sender=self._key)
        return _tx_hash(receipt)

    def reveal(self, items: Sequence[CommitItem]) -> str:
        """Reveal one task (reveal) or several (revealMany); returns the tx hash."""
        escrow = self.contracts.escrow
        if len(items) == 1:
            item = items[0]
            receipt = escrow.reveal(item.task_id, item.result_hash, item.salt, sender=self._key)
        else:
            receipt = escrow.reveal_many([item.task_id for item in items],
                                         [item.result_hash for item in items],
                                         [item.salt for item in items], sender=self._key)
        return _tx_hash(receipt)
