"""What happened on chain, rebuilt from contract events alone (no database): a task's history, a
provider's history, network totals. The explorer CLI and API read these; anyone can check them.

Escrow v2 credits every payment, refund and fee (ReplicaFinalized.paid, TaskSettled, ...) and money leaves
only through claims (Claimed), so amounts earned and amounts withdrawn are reported separately.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, Field

from hashgrid.chain.contracts import ChainEvent, Contracts
from hashgrid.errors import NotFound

TERMINAL = {
    "TaskSettled": "Settled",
    "TaskFailed": "Failed",
    "TaskCancelled": "Cancelled",
    "TaskExpired": "Expired",
}
OUTCOMES = ("None", "Assigned", "Committed", "Revealed", "Agreed", "Dissented", "NoShow", "Released")


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


class ReplicaView(BaseModel):
    replica_index: int  # assignment order in the task, from 0
    provider: str
    assigned_block: int
    round: int  # the commit/reveal round it was assigned in, from 1
    commit_deadline: int
    reveal_deadline: int
    commitment: str | None = None
    revealed_hash: str | None = None
    outcome: str | None = None  # Agreed, Dissented, NoShow or Released once finalized
    paid: int = 0  # credited at finalize (ReplicaFinalized.paid)
    slashed: int = 0


class Slash(BaseModel):
    task_id: int
    provider: str
    amount: int
    recipient: str
    block: int


class TaskHistory(BaseModel):
    task_id: int
    customer: str
    spec_hash: str
    replicas: int
    quorum: int
    max_replicas: int
    max_price_per_replica: int
    deadline: int
    escrowed: int
    posted_block: int
    state: str  # Posted, Assigned, Settled, Failed, Cancelled or Expired
    accepted_result: str | None = None
    agreeing: int = 0
    paid: int = 0
    fee: int = 0
    refunded: int = 0
    replica_views: list[ReplicaView] = Field(default_factory=list)
    slashes: list[Slash] = Field(default_factory=list)
    timeline: list[str] = Field(default_factory=list)  # "block N: Event(...)" lines, oldest first


class ProviderTask(BaseModel):
    task_id: int
    outcome: str | None
    paid: int
    slashed: int


class ProviderHistory(BaseModel):
    provider: str
    registered: bool
    operator: str | None = None
    capabilities_uri: str | None = None
    stake: int  # current active stake
    unbonding: int
    unbonding_release: int
    active_assignments: int
    staked_in: int  # sum of Staked amounts
    unstake_requested: int
    withdrawn: int
    rewards: int  # credited by finalize (sum of ReplicaFinalized.paid)
    slashed: int
    claimed: int = 0  # escrow credits withdrawn (Claimed)
    claimable: int = 0  # escrow credits not withdrawn yet
    tasks: list[ProviderTask] = Field(default_factory=list)


class NetworkStats(BaseModel):
    tasks: int
    tasks_by_state: dict[str, int]
    escrowed: int
    paid_to_providers: int
    protocol_fees: int
    refunded: int
    slashed: int
    providers: int
    total_staked: int
    total_unbonding: int
    total_locked: int
    claimed: int = 0  # escrow credits withdrawn so far (Claimed)
    total_claimable: int = 0  # escrow credits not withdrawn yet
    from_block: int
    to_block: int


class Explorer:
    """Queries over one deployment's events, from its start block to the latest block."""

    def __init__(self, contracts: Contracts) -> None:
        self.contracts = contracts
        self.start_block = contracts.deployment.start_block

    def task_history(self, task_id: int) -> TaskHistory:
        escrow, registry = self.contracts.escrow, self.contracts.registry
        events = escrow.events(self.start_block, first_indexed=task_id)
        posted = next((e for e in events if e.name == "TaskPosted"), None)
        if posted is None:
            raise NotFound(f"no task {task_id} on chain")
        a = posted.args
        history = TaskHistory(
            task_id=task_id,
            customer=a["customer"],
            spec_hash=_hex(a["specHash"]),
            replicas=a["replicas"],
            quorum=a["quorum"],
            max_replicas=a["maxReplicas"],
            max_price_per_replica=a["maxPricePerReplica"],
            deadline=a["deadline"],
            escrowed=a["escrowed"],
            posted_block=posted.block_number,
            state="Posted",
        )
        by_provider: dict[str, ReplicaView] = {}
        rounds = {e.tx_hash: e for e in events if e.name == "RoundOpened"}  # one per assign of this task
        round_numbers = {tx: i + 1 for i, tx in enumerate(rounds)}
        for event in events:
            history.timeline.append(_line(event))
            args = event.args
            if event.name == "TaskAssigned":
                opened = rounds.get(event.tx_hash)
                view = ReplicaView(
                    replica_index=len(history.replica_views),
                    provider=args["provider"],
                    assigned_block=event.block_number,
                    round=round_numbers.get(event.tx_hash, 0),
                    commit_deadline=opened.args["commitDeadline"] if opened else 0,
                    reveal_deadline=opened.args["revealDeadline"] if opened else 0,
                )
                by_provider[args["provider"]] = view
                history.replica_views.append(view)
                history.state = "Assigned"
            elif event.name == "ResultCommitted":
                by_provider[args["provider"]].commitment = _hex(args["commitment"])
            elif event.name == "ResultRevealed":
                by_provider[args["provider"]].revealed_hash = _hex(args["resultHash"])
            elif event.name == "ReplicaFinalized":
                by_provider[args["provider"]].outcome = OUTCOMES[args["outcome"]]
                by_provider[args["provider"]].paid += args["paid"]
            elif event.name in TERMINAL:
                history.state = TERMINAL[event.name]
                history.refunded = args["refunded"]
                if event.name == "TaskSettled":
                    history.accepted_result = _hex(args["resultHash"])
                    history.agreeing, history.paid, history.fee = args["agreeing"], args["paid"], args["fee"]
        for event in registry.events(self.start_block, names=["Slashed"], taskId=task_id):
            slash = Slash(
                task_id=task_id,
                provider=event.args["provider"],
                amount=event.args["amount"],
                recipient=event.args["recipient"],
                block=event.block_number,
            )
            history.slashes.append(slash)
            history.timeline.append(_line(event))
            if slash.provider in by_provider:
                by_provider[slash.provider].slashed += slash.amount
        return history

    def provider_history(self, provider: str) -> ProviderHistory:
        contracts = self.contracts
        registry, escrow = contracts.registry, contracts.escrow
        address = contracts.client.w3.to_checksum_address(provider)
        reg_events = registry.events(self.start_block, first_indexed=address)
        registered = [e for e in reg_events if e.name == "ProviderRegistered"]
        unbonding, release = registry.unbonding_of(address)
        history = ProviderHistory(
            provider=address,
            registered=bool(registered),
            operator=registered[-1].args["operator"] if registered else None,
            capabilities_uri=registered[-1].args["capabilitiesURI"] if registered else None,
            stake=registry.stake_of(address),
            unbonding=unbonding,
            unbonding_release=release,
            active_assignments=registry.active_assignments(address),
            staked_in=_sum(reg_events, "Staked"),
            unstake_requested=_sum(reg_events, "UnstakeRequested"),
            withdrawn=_sum(reg_events, "Withdrawn"),
            rewards=0,
            slashed=_sum(reg_events, "Slashed"),
            claimed=_sum(
                escrow.events(self.start_block, names=["Claimed"], first_indexed=address), "Claimed"
            ),
            claimable=escrow.claimable(address),
        )
        names = ["TaskAssigned", "ReplicaFinalized"]
        tasks: dict[int, ProviderTask] = {}
        for event in escrow.events(self.start_block, names=names, provider=address):
            task = tasks.setdefault(
                event.args["taskId"],
                ProviderTask(task_id=event.args["taskId"], outcome=None, paid=0, slashed=0),
            )
            if event.name == "ReplicaFinalized":
                task.outcome = OUTCOMES[event.args["outcome"]]
                task.paid += event.args["paid"]
                history.rewards += event.args["paid"]
        for event in reg_events:
            if event.name == "Slashed" and event.args["taskId"] in tasks:
                tasks[event.args["taskId"]].slashed += event.args["amount"]
        history.tasks = sorted(tasks.values(), key=lambda t: t.task_id)
        return history

    def network_stats(self) -> NetworkStats:
        contracts = self.contracts
        escrow, registry = contracts.escrow, contracts.registry
        latest = contracts.client.block_number()
        events = escrow.events(self.start_block, latest)
        states: dict[int, str] = {}
        totals: Counter[str] = Counter()
        for event in events:
            a = event.args
            if event.name == "TaskPosted":
                states[a["taskId"]] = "Posted"
                totals["escrowed"] += a["escrowed"]
            elif event.name == "TaskAssigned":
                states[a["taskId"]] = "Assigned"
            elif event.name == "Claimed":
                totals["claimed"] += a["amount"]
            elif event.name in TERMINAL:
                states[a["taskId"]] = TERMINAL[event.name]
                totals["refunded"] += a["refunded"]
                if event.name == "TaskSettled":
                    totals["paid"] += a["paid"]
                    totals["fee"] += a["fee"]
        reg_events = registry.events(self.start_block, latest, names=["ProviderRegistered", "Slashed"])
        providers = {e.args["provider"] for e in reg_events if e.name == "ProviderRegistered"}
        return NetworkStats(
            tasks=len(states),
            tasks_by_state=dict(Counter(states.values())),
            escrowed=totals["escrowed"],
            paid_to_providers=totals["paid"],
            protocol_fees=totals["fee"],
            refunded=totals["refunded"],
            slashed=_sum(reg_events, "Slashed"),
            providers=len(providers),
            total_staked=registry.total_staked(),
            total_unbonding=registry.total_unbonding(),
            total_locked=escrow.total_locked(),
            claimed=totals["claimed"],
            total_claimable=escrow.total_claimable(),
            from_block=self.start_block,
            to_block=latest,
        )


def _sum(events: list[ChainEvent], name: str) -> int:
    return sum(int(e.args["amount"]) for e in events if e.name == name)


def _line(event: ChainEvent) -> str:
    def show(value: Any) -> str:
        if isinstance(value, bytes):
            return _hex(value)[:18] + "…"
        return str(value)

    args = ", ".join(f"{k}={show(v)}" for k, v in event.args.items() if k != "taskId")
    return f"block {event.block_number}: {event.name}({args})"
