"""Thin typed bindings over the deployed contracts: one object per contract whose methods mirror the
Solidity interface, send through `ChainClient.transact` (receipts back) or call views (decoded values),
and read events (`escrow.events(from_block, to_block)`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, keccak, to_checksum_address
from web3.types import TxReceipt

from hashgrid.chain.client import ChainClient, Signer
from hashgrid.chain.deployment import Deployment
from hashgrid.errors import NotFound


class TaskState(IntEnum):
    NONE = 0
    POSTED = 1
    ASSIGNED = 2
    SETTLED = 3
    FAILED = 4
    CANCELLED = 5
    EXPIRED = 6


class ReplicaState(IntEnum):
    NONE = 0
    ASSIGNED = 1
    COMMITTED = 2
    REVEALED = 3
    AGREED = 4
    DISSENTED = 5
    NO_SHOW = 6
    RELEASED = 7


class ProposalState(IntEnum):
    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXPIRED = 6
    EXECUTED = 7


ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class TaskTerms:
    """The terms of one task as posted (ITaskEscrow.TaskTerms)."""

    spec_hash: bytes
    replicas: int
    quorum: int
    max_replicas: int
    max_price_per_replica: int
    deadline: int

    def as_tuple(self) -> tuple[bytes, int, int, int, int, int]:
        return (
            bytes(self.spec_hash),
            self.replicas,
            self.quorum,
            self.max_replicas,
            self.max_price_per_replica,
            self.deadline,
        )


@dataclass(frozen=True)
class Task:
    """A task as getTask returns it (two slots). The spec hash is only in TaskPosted (`Escrow.spec_hash_of`),
    the accepted result only in TaskSettled / resultOf (`Escrow.result_of`)."""

    task_id: int
    customer: str
    max_price_per_replica: int
    deadline: int
    commit_deadline: int  # current round
    reveal_deadline: int  # current round
    replicas: int
    quorum: int
    max_replicas: int
    assigned: int  # replicas assigned so far (all rounds)
    round: int  # current commit/reveal round (1 after the first assign)
    round_size: int  # replicas assigned in the current round
    round_committed: int  # of those, how many committed
    fee_bps: int
    state: TaskState


@dataclass(frozen=True)
class Replica:
    """A provider's replica of a task (replicaOf): its state and the stored 248-bit payload (its round while
    Assigned, then the low 248 bits of its commitment, then of its revealed result hash)."""

    provider: str
    state: ReplicaState
    payload: bytes


@dataclass(frozen=True)
class ReplicaReport:
    """What the settler reports for one replica at finalize (ITaskEscrow.ReplicaReport)."""

    provider: str
    result_hash: bytes  # what the replica revealed; zero if it did not reveal
    payment: int  # 0 unless it agrees with the accepted result

    def as_tuple(self) -> tuple[str, bytes, int]:
        return (to_checksum_address(self.provider), bytes(self.result_hash), int(self.payment))


def low248(value: bytes) -> bytes:
    """A hash as the escrow stores it in a replica slot (commitment or result): its low 248 bits."""
    return bytes(1) + bytes(value)[1:]


def address_key(address: str) -> int:
    """The order the escrow wants report and expire lists in: ascending by the address as an integer."""
    return int(address, 16)


def accepted_result(result_hashes: Iterable[bytes], quorum: int) -> bytes | None:
    """The hash at least `quorum` revealed replicas agree on (what finalize accepts), else None. When
    several hashes reach the quorum (only possible with quorum <= k/2) the most revealed wins; a tie has
    no single answer here and returns None."""
    counts: dict[bytes, int] = {}
    for h in result_hashes:
        if h and bytes(h) != ZERO_HASH:
            counts[bytes(h)] = counts.get(bytes(h), 0) + 1
    reached = sorted(((n, h) for h, n in counts.items() if n >= quorum), reverse=True)
    if not reached or (len(reached) > 1 and reached[0][0] == reached[1][0]):
        return None
    return reached[0][1]


@dataclass(frozen=True)
class ChainEvent:
    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int
    address: str


def commitment_for(result_hash: bytes, salt: bytes, provider: str) -> bytes:
    """keccak256(abi.encode(resultHash, salt, provider)), as TaskEscrow.commitmentFor computes it."""
    return keccak(
        abi_encode(["bytes32", "bytes32", "address"], [result_hash, salt, to_checksum_address(provider)])
    )


class Bound:
    """A contract at an address with the client that sends to it."""

    def __init__(self, client: ChainClient, address: str, abi: list[dict[str, Any]]) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.abi = abi
        self.contract = client.w3.eth.contract(address=self.address, abi=abi)
        self.start_block = 0  # where event scans start by default (the deployment's start block)
        client.decoder.add_abi(abi)
        self._events_by_topic = {
            event_abi_to_log_topic(item): item  # type: ignore[arg-type]
            for item in abi
            if item.get("type") == "event"
        }

    def fn(self, name: str, *args: Any) -> Any:
        return getattr(self.contract.functions, name)(*args)

    def has_function(self, name: str) -> bool:
        return any(item.get("type") == "function" and item.get("name") == name for item in self.abi)

    def _outputs(self, name: str) -> list[dict[str, Any]]:
        for item in self.abi:
            if item.get("type") == "function" and item.get("name") == name:
                return list(item.get("outputs", []))
        raise NotFound(f"{type(self).__name__} has no function {name}")

    def _tx(self, name: str, *args: Any, sender: Signer) -> TxReceipt:
        return self.client.transact(self.fn(name, *args), sender=sender)

    def _call(self, name: str, *args: Any, block: int | str = "latest") -> Any:
        return self.client.call(self.fn(name, *args), block=block)

    def encode(self, name: str, *args: Any) -> bytes:
        """Calldata of `name(args)` (for governance proposals)."""
        return bytes.fromhex(self.contract.encode_abi(name, args=list(args))[2:])

    def _event(self, raw: Any) -> ChainEvent | None:
        topics = raw.get("topics") or []
        item = self._events_by_topic.get(bytes(topics[0])) if topics else None
        if item is None:
            return None
        decoded = getattr(self.contract.events, item["name"])().process_log(raw)
        return ChainEvent(
            name=item["name"],
            args=dict(decoded["args"]),
            block_number=int(raw["blockNumber"]),
            tx_hash="0x" + bytes(raw["transactionHash"]).hex(),
            log_index=int(raw["logIndex"]),
            address=self.address,
        )

    def events(
        self,
        from_block: int | None = None,
        to_block: int | str = "latest",
        *,
        names: Iterable[str] | None = None,
        first_indexed: int | str | None = None,
        **arg_filters: Any,
    ) -> list[ChainEvent]:
        """Events of this contract in [from_block (default: the deployment's start block), to_block], oldest
        first. `names` limits the event types;
        `first_indexed` filters on the first indexed argument at the node (e.g. a taskId); other keyword
        arguments filter decoded arguments by equality."""
        start = self.start_block if from_block is None else from_block
        params: dict[str, Any] = {"address": self.address, "fromBlock": start, "toBlock": to_block}
        topics: list[Any] = [None]
        if names is not None:
            wanted = set(names)
            topics[0] = [
                event_abi_to_log_topic(i)  # type: ignore[arg-type]
                for i in self._events_by_topic.values()
                if i["name"] in wanted
            ]
        if first_indexed is not None:
            value = first_indexed
            word = (
                int(value).to_bytes(32, "big")
                if isinstance(value, int)
                else bytes(12) + bytes.fromhex(value[2:])
            )
            topics.append("0x" + word.hex())
        if topics != [None]:
            params["topics"] = topics
        logs = self.client._guarded(lambda: self.client.w3.eth.get_logs(params))  # type: ignore[arg-type]
        events = [e for e in (self._event(log) for log in logs) if e is not None]
        if arg_filters:
            events = [e for e in events if all(_same(e.args.get(k), v) for k, v in arg_filters.items())]
        return events

    def receipt_events(self, receipt: TxReceipt, name: str | None = None) -> list[ChainEvent]:
        """Events of this contract in one receipt."""
        events = [
            e
            for e in (
                self._event(log)
                for log in receipt["logs"]
                if to_checksum_address(log["address"]) == self.address
            )
            if e is not None
        ]
        return [e for e in events if name is None or e.name == name]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return bool(a == b)


class Token(Bound):
    def name(self) -> str:
        return str(self._call("name"))

    def symbol(self) -> str:
        return str(self._call("symbol"))

    def decimals(self) -> int:
        return int(self._call("decimals"))

    def total_supply(self) -> int:
        return int(self._call("totalSupply"))

    def balance_of(self, account: str) -> int:
        return int(self._call("balanceOf", to_checksum_address(account)))

    def allowance(self, owner: str, spender: str) -> int:
        return int(self._call("allowance", to_checksum_address(owner), to_checksum_address(spender)))

    def transfer(self, to: str, amount: int, *, sender: Signer) -> TxReceipt:
        return self._tx("transfer", to_checksum_address(to), amount, sender=sender)

    def approve(self, spender: str, amount: int, *, sender: Signer) -> TxReceipt:
        return self._tx("approve", to_checksum_address(spender), amount, sender=sender)

    def nonces(self, owner: str) -> int:
        return int(self._call("nonces", to_checksum_address(owner)))

    def delegate(self, delegatee: str, *, sender: Signer) -> TxReceipt:
        return self._tx("delegate", to_checksum_address(delegatee), sender=sender)

    def delegates(self, account: str) -> str:
        return str(self._call("delegates", to_checksum_address(account)))

    def get_votes(self, account: str) -> int:
        return int(self._call("getVotes", to_checksum_address(account)))

    def sign_permit(
        self, owner: LocalAccount, spender: str, value: int, deadline: int
    ) -> tuple[int, bytes, bytes]:
        """An EIP-2612 permit signature (v, r, s) for `spender` to pull `value` from `owner`."""
        _fields, name, version, chain_id, verifying, _salt, _ext = self._call("eip712Domain")
        signed = owner.sign_typed_data(
            domain_data={
                "name": name,
                "version": version,
                "chainId": chain_id,
                "verifyingContract": verifying,
            },
            message_types={
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ]
            },
            message_data={
                "owner": owner.address,
                "spender": to_checksum_address(spender),
                "value": value,
                "nonce": self.nonces(owner.address),
                "deadline": deadline,
            },
        )
        return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


class Registry(Bound):
    def register(
        self, operator: str, capabilities_hash: bytes, capabilities_uri: str, *, sender: Signer
    ) -> TxReceipt:
        return self._tx(
            "register", to_checksum_address(operator), capabilities_hash, capabilities_uri, sender=sender
        )

    def stake(self, amount: int, *, sender: Signer) -> TxReceipt:
        return self._tx("stake", amount, sender=sender)

    def stake_with_permit(self, token: Token, amount: int, deadline: int, *, sender: Signer) -> TxReceipt:
        account = self.client.account(sender)
        v, r, s = token.sign_permit(account, self.address, amount, deadline)
        return self._tx("stakeWithPermit", amount, deadline, v, r, s, sender=account)

    def request_unstake(self, amount: int, *, sender: Signer) -> TxReceipt:
        return self._tx("requestUnstake", amount, sender=sender)

    def withdraw(self, *, sender: Signer) -> TxReceipt:
        return self._tx("withdraw", sender=sender)

    def stake_of(self, provider: str) -> int:
        return int(self._call("stakeOf", to_checksum_address(provider)))

    def unbonding_of(self, provider: str) -> tuple[int, int]:
        amount, release = self._call("unbondingOf", to_checksum_address(provider))
        return int(amount), int(release)

    def active_assignments(self, provider: str) -> int:
        return int(self._call("activeAssignments", to_checksum_address(provider)))

    def operator_of(self, provider: str) -> str:
        return str(self._call("operatorOf", to_checksum_address(provider)))

    def capabilities_of(self, provider: str) -> tuple[bytes, str]:
        capabilities_hash, uri = self._call("capabilitiesOf", to_checksum_address(provider))
        return bytes(capabilities_hash), str(uri)

    def is_eligible(self, provider: str) -> bool:
        return bool(self._call("isEligible", to_checksum_address(provider)))

    def param(self, name: str) -> int | str:
        """A governance parameter by its getter: minStake, unbondingDelay, treasury."""
        value = self._call(name)
        return value if isinstance(value, str) else int(value)

    def min_stake(self) -> int:
        return int(self._call("minStake"))

    def total_staked(self) -> int:
        return int(self._call("totalStaked"))

    def total_unbonding(self) -> int:
        return int(self._call("totalUnbonding"))


class Escrow(Bound):
    # -------------------------------------------------------------- customer
    def post_task(self, terms: TaskTerms, *, sender: Signer) -> TxReceipt:
        """postTask(terms): pulls escrowFor(maxReplicas, maxPricePerReplica) (approve it first)."""
        return self._tx("postTask", terms.as_tuple(), sender=sender)

    def post_tasks(self, terms: Sequence[TaskTerms], *, sender: Signer) -> TxReceipt:
        """postTasks(terms[]): several tasks with one transferFrom of their total; `task_ids_of` the receipt
        gives their ids."""
        return self._tx("postTasks", [t.as_tuple() for t in terms], sender=sender)

    def post_task_with_permit(
        self,
        token: Token,
        terms: TaskTerms,
        *,
        sender: Signer,
        permit_deadline: int | None = None,
    ) -> TxReceipt:
        """Post with an EIP-2612 permit for exactly `escrowFor(maxReplicas, maxPrice)`: no approve needed."""
        account = self.client.account(sender)
        value = self.escrow_for(terms.max_replicas, terms.max_price_per_replica)
        permit_deadline = permit_deadline or terms.deadline
        v, r, s = token.sign_permit(account, self.address, value, permit_deadline)
        return self._tx(
            "postTaskWithPermit", terms.as_tuple(), value, permit_deadline, v, r, s, sender=account
        )

    def task_ids_of(self, receipt: TxReceipt) -> list[int]:
        """The ids of the tasks a post receipt created, in order."""
        return [int(e.args["taskId"]) for e in self.receipt_events(receipt, "TaskPosted")]

    def task_id_of(self, receipt: TxReceipt) -> int:
        """The id of the task a postTask receipt created (the first one of a postTasks receipt)."""
        ids = self.task_ids_of(receipt)
        if not ids:
            raise NotFound("no TaskPosted event in this receipt")
        return ids[0]

    def cancel_task(self, task_id: int, *, sender: Signer) -> TxReceipt:
        return self._tx("cancelTask", task_id, sender=sender)

    # -------------------------------------------------------------- matcher
    def assign(self, task_id: int, providers: Sequence[str], *, sender: Signer) -> TxReceipt:
        return self._tx("assign", task_id, [to_checksum_address(p) for p in providers], sender=sender)

    def assign_many(
        self, task_ids: Sequence[int], providers: Sequence[Sequence[str]], *, sender: Signer
    ) -> TxReceipt:
        return self._tx(
            "assignMany",
            list(task_ids),
            [[to_checksum_address(p) for p in ps] for ps in providers],
            sender=sender,
        )

    # -------------------------------------------------------------- provider
    def commit(self, task_id: int, commitment: bytes, *, sender: Signer) -> TxReceipt:
        return self._tx("commit", task_id, commitment, sender=sender)

    def commit_many(
        self, task_ids: Sequence[int], commitments: Sequence[bytes], *, sender: Signer
    ) -> TxReceipt:
        return self._tx("commitMany", list(task_ids), list(commitments), sender=sender)

    def reveal(self, task_id: int, result_hash: bytes, salt: bytes, *, sender: Signer) -> TxReceipt:
        return self._tx("reveal", task_id, result_hash, salt, sender=sender)

    def reveal_many(
        self,
        task_ids: Sequence[int],
        result_hashes: Sequence[bytes],
        salts: Sequence[bytes],
        *,
        sender: Signer,
    ) -> TxReceipt:
        return self._tx("revealMany", list(task_ids), list(result_hashes), list(salts), sender=sender)

    # -------------------------------------------------------------- settler
    def finalize(self, task_id: int, reports: Sequence[ReplicaReport], *, sender: Signer) -> TxReceipt:
        """finalize(taskId, reports): one report per assigned replica, sorted by provider address (sent as
        given, so a caller can test the escrow's checks; `build_reports` makes a correct list)."""
        return self._tx("finalize", task_id, [r.as_tuple() for r in reports], sender=sender)

    def finalize_many(
        self,
        task_ids: Sequence[int],
        reports: Sequence[Sequence[ReplicaReport]],
        *,
        sender: Signer,
    ) -> TxReceipt:
        return self._tx(
            "finalizeMany",
            list(task_ids),
            [[r.as_tuple() for r in rs] for rs in reports],
            sender=sender,
        )

    def build_reports(
        self,
        task_id: int,
        payments_by_provider: Mapping[Any, int] | None = None,  # address (any case) -> wei
        *,
        only_agreeing: bool = True,
    ) -> list[ReplicaReport]:
        """The report list finalize wants, rebuilt from TaskAssigned and ResultRevealed events: one entry per
        assigned replica, sorted ascending by provider address, with the hash it revealed (zero if none)
        and its payment from `payments_by_provider` (keys in any address case; missing means 0). With
        `only_agreeing` (the default) a replica that did not reveal the accepted result is reported with
        payment 0 whatever billing metered, as the escrow requires."""
        events = self.events(names=["TaskAssigned", "ResultRevealed"], first_indexed=task_id)
        providers: list[str] = []
        revealed: dict[str, bytes] = {}
        for event in events:
            address = str(to_checksum_address(event.args["provider"]))
            if event.name == "TaskAssigned":
                if address not in providers:
                    providers.append(address)
            else:
                revealed[address] = bytes(event.args["resultHash"])
        payments = {str(to_checksum_address(k)): int(v) for k, v in (payments_by_provider or {}).items()}
        accepted = (
            accepted_result(revealed.values(), self.get_task(task_id).quorum) if only_agreeing else None
        )
        reports = []
        for provider in providers:
            result_hash = revealed.get(provider, ZERO_HASH)
            payment = payments.get(provider, 0)
            if only_agreeing and (accepted is None or result_hash != accepted):
                payment = 0
            reports.append(ReplicaReport(provider, result_hash, payment))
        return sorted(reports, key=lambda r: address_key(r.provider))

    # -------------------------------------------------------------- anyone
    def expire(self, task_id: int, providers: Sequence[str] | None = None, *, sender: Signer) -> TxReceipt:
        """expire(taskId, providers): `providers` defaults to the task's replicas from TaskAssigned events,
        sorted by address (empty if never assigned)."""
        listed = self.replicas_of(task_id) if providers is None else list(providers)
        if providers is None:
            listed.sort(key=address_key)
        return self._tx("expire", task_id, [to_checksum_address(p) for p in listed], sender=sender)

    def claim(self, *, sender: Signer) -> TxReceipt:
        """Withdraw the sender's credits (payments, refunds, fees)."""
        return self._tx("claim", sender=sender)

    def claim_for(self, account: str, *, sender: Signer) -> TxReceipt:
        """Push `account`'s credits to `account` (anyone may send it)."""
        return self._tx("claimFor", to_checksum_address(account), sender=sender)

    def claimed_amount(self, receipt: TxReceipt) -> int:
        """What a claim receipt paid out (its Claimed event)."""
        return sum(int(e.args["amount"]) for e in self.receipt_events(receipt, "Claimed"))

    # -------------------------------------------------------------- views
    def get_task(self, task_id: int) -> Task:
        raw = self._call("getTask", task_id)
        names = [c["name"] for c in self._outputs("getTask")[0].get("components", [])]
        fields = dict(zip(names, raw, strict=True)) if names else {}
        return Task(
            task_id=task_id,
            customer=str(fields["customer"]),
            max_price_per_replica=int(fields["maxPricePerReplica"]),
            deadline=int(fields["deadline"]),
            commit_deadline=int(fields["commitDeadline"]),
            reveal_deadline=int(fields["revealDeadline"]),
            replicas=int(fields["replicas"]),
            quorum=int(fields["quorum"]),
            max_replicas=int(fields["maxReplicas"]),
            assigned=int(fields["assigned"]),
            round=int(fields.get("round", 0)),
            round_size=int(fields.get("roundSize", 0)),
            round_committed=int(fields.get("roundCommitted", 0)),
            fee_bps=int(fields["feeBps"]),
            state=TaskState(int(fields["state"])),
        )

    def replica_of(self, task_id: int, provider: str) -> Replica:
        """The provider's replica of the task (state NONE when it holds none)."""
        address = to_checksum_address(provider)
        state, payload = self._call("replicaOf", task_id, address)
        return Replica(address, ReplicaState(int(state)), bytes(payload))

    def replicas_of(self, task_id: int) -> list[str]:
        """The task's replica providers in assignment order, from its TaskAssigned events."""
        providers: list[str] = []
        for event in self.events(names=["TaskAssigned"], first_indexed=task_id):
            provider = to_checksum_address(event.args["provider"])
            if provider not in providers:
                providers.append(provider)
        return providers

    def replicas(self, task_id: int) -> list[Replica]:
        """Every replica of the task (assignment order) with its state and payload from replicaOf."""
        return [self.replica_of(task_id, p) for p in self.replicas_of(task_id)]

    def spec_hash_of(self, task_id: int) -> bytes:
        """The task's spec hash, from its TaskPosted event (the escrow does not store it)."""
        posted = self.events(names=["TaskPosted"], first_indexed=task_id)
        if not posted:
            raise NotFound(f"no task {task_id} on chain", task_id=task_id)
        return bytes(posted[0].args["specHash"])

    def result_of(self, task_id: int) -> bytes | None:
        """The accepted result of a Settled task (resultOf, else its TaskSettled event); None otherwise."""
        if self.has_function("resultOf"):
            value = bytes(self._call("resultOf", task_id))
            return None if value == ZERO_HASH else value
        settled = self.events(names=["TaskSettled"], first_indexed=task_id)
        return bytes(settled[-1].args["resultHash"]) if settled else None

    def task_count(self) -> int:
        return int(self._call("taskCount"))

    def escrow_for(self, max_replicas: int, max_price_per_replica: int) -> int:
        return int(self._call("escrowFor", max_replicas, max_price_per_replica))

    def total_locked(self) -> int:
        return int(self._call("totalLocked"))

    def claimable(self, account: str) -> int:
        return int(self._call("claimable", to_checksum_address(account)))

    def total_claimable(self) -> int:
        return int(self._call("totalClaimable"))

    def treasury(self) -> str:
        """Where protocol fees are credited (the DAO treasury, i.e. the Timelock)."""
        return str(self._call("treasury"))

    def commitment_for(self, result_hash: bytes, salt: bytes, provider: str) -> bytes:
        return commitment_for(result_hash, salt, provider)

    def param(self, name: str) -> int:
        """A governance parameter by its getter name, e.g. protocolFeeBps, commitWindow."""
        return int(self._call(name))

    def has_role(self, role: str, account: str) -> bool:
        return bool(self._call("hasRole", keccak(text=role), to_checksum_address(account)))


class Timelock(Bound):
    def min_delay(self) -> int:
        return int(self._call("getMinDelay"))


class Governor(Bound):
    def propose(
        self,
        targets: Sequence[str],
        values: Sequence[int],
        calldatas: Sequence[bytes],
        description: str,
        *,
        sender: Signer,
    ) -> tuple[int, TxReceipt]:
        receipt = self._tx(
            "propose",
            [to_checksum_address(t) for t in targets],
            list(values),
            list(calldatas),
            description,
            sender=sender,
        )
        created = self.receipt_events(receipt, "ProposalCreated")
        return int(created[0].args["proposalId"]), receipt

    def cast_vote(self, proposal_id: int, support: int, *, sender: Signer, reason: str = "") -> TxReceipt:
        if reason:
            return self._tx("castVoteWithReason", proposal_id, support, reason, sender=sender)
        return self._tx("castVote", proposal_id, support, sender=sender)

    def queue(
        self,
        targets: Sequence[str],
        values: Sequence[int],
        calldatas: Sequence[bytes],
        description_hash: bytes,
        *,
        sender: Signer,
    ) -> TxReceipt:
        return self._tx(
            "queue", list(targets), list(values), list(calldatas), description_hash, sender=sender
        )

    def execute(
        self,
        targets: Sequence[str],
        values: Sequence[int],
        calldatas: Sequence[bytes],
        description_hash: bytes,
        *,
        sender: Signer,
    ) -> TxReceipt:
        return self._tx(
            "execute", list(targets), list(values), list(calldatas), description_hash, sender=sender
        )

    def state(self, proposal_id: int) -> ProposalState:
        return ProposalState(int(self._call("state", proposal_id)))

    def proposal_snapshot(self, proposal_id: int) -> int:
        return int(self._call("proposalSnapshot", proposal_id))

    def proposal_deadline(self, proposal_id: int) -> int:
        return int(self._call("proposalDeadline", proposal_id))

    def proposal_eta(self, proposal_id: int) -> int:
        return int(self._call("proposalEta", proposal_id))

    def proposal_votes(self, proposal_id: int) -> tuple[int, int, int]:
        against, for_, abstain = self._call("proposalVotes", proposal_id)
        return int(against), int(for_), int(abstain)

    def quorum(self, timepoint: int) -> int:
        return int(self._call("quorum", timepoint))

    def clock(self) -> int:
        return int(self._call("clock"))

    def clock_mode(self) -> str:
        return str(self._call("CLOCK_MODE"))

    def voting_delay(self) -> int:
        return int(self._call("votingDelay"))

    def voting_period(self) -> int:
        return int(self._call("votingPeriod"))

    def proposal_threshold(self) -> int:
        return int(self._call("proposalThreshold"))

    def has_voted(self, proposal_id: int, account: str) -> bool:
        return bool(self._call("hasVoted", proposal_id, to_checksum_address(account)))


@dataclass
class Contracts:
    """All bound contracts of one deployment."""

    client: ChainClient
    deployment: Deployment
    token: Token
    registry: Registry
    escrow: Escrow
    timelock: Timelock
    governor: Governor

    @classmethod
    def load(cls, client: ChainClient, deployment: Deployment) -> Contracts:
        def bind(kind: type[Any], name: str) -> Any:
            bound = kind(client, deployment.address(name), deployment.abis[name])
            bound.start_block = deployment.start_block
            return bound

        return cls(
            client,
            deployment,
            bind(Token, "GridToken"),
            bind(Registry, "ProviderRegistry"),
            bind(Escrow, "TaskEscrow"),
            bind(Timelock, "TimelockController"),
            bind(Governor, "GridGovernor"),
        )

    def by_name(self, name: str) -> Bound:
        """A binding by short name (token, registry, escrow, timelock, governor) or contract name."""
        table: dict[str, Bound] = {
            "token": self.token,
            "registry": self.registry,
            "escrow": self.escrow,
            "timelock": self.timelock,
            "governor": self.governor,
            "GridToken": self.token,
            "ProviderRegistry": self.registry,
            "TaskEscrow": self.escrow,
            "TimelockController": self.timelock,
            "GridGovernor": self.governor,
        }
        try:
            return table[name]
        except KeyError:
            raise NotFound(
                f"no contract named {name!r} (use token, registry, escrow, timelock, governor)"
            ) from None
