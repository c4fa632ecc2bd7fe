"""DAO governance from the command line and from Python: propose a parameter change (or a treasury payment),
vote, queue, execute, status, list, delegate. On anvil (chain 31337) a step that must wait advances blocks or
time itself (anvil_mine, evm_increaseTime) and says so; elsewhere it says how long to wait.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_utils import is_address, keccak, to_checksum_address
from rich.table import Table
from web3.types import TxReceipt

from hashgrid.chain.client import Signer
from hashgrid.chain.contracts import Contracts, ProposalState
from hashgrid.config import DEV_CHAIN_ID
from hashgrid.errors import InvalidInput, NotFound

SUPPORT = {"against": 0, "for": 1, "abstain": 2}
GRID = 10**18
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
Say = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


@dataclass(frozen=True)
class Action:
    """One call the timelock will make if the proposal passes."""

    target: str
    value: int
    calldata: bytes
    summary: str


@dataclass(frozen=True)
class Proposal:
    proposal_id: int
    proposer: str
    targets: list[str]
    values: list[int]
    calldatas: list[bytes]
    description: str
    vote_start: int
    vote_end: int

    @property
    def description_hash(self) -> bytes:
        return keccak(text=self.description)


@dataclass(frozen=True)
class ProposalStatus:
    proposal: Proposal
    state: ProposalState
    votes_for: int
    votes_against: int
    votes_abstain: int
    quorum: int
    clock: int
    eta: int


# ---------------------------------------------------------------------- building actions
def parse_value(text: str, abi_type: str) -> int | str:
    """A value for a setter argument: an address, or an integer with an optional GRID or s/m/h/d suffix."""
    text = text.strip().replace("_", "")
    if abi_type == "address":
        if not is_address(text):
            raise InvalidInput(f"{text!r} is not an address")
        return to_checksum_address(text)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(GRID|grid|[smhd])?", text)
    if not match:
        raise InvalidInput(f"{text!r} is not a number (examples: 300, 250GRID, 15m, 2d)")
    number, unit = match.groups()
    if unit and unit.lower() == "grid":
        scaled = float(number) * GRID if "." in number else int(number) * GRID
        return int(scaled)
    if "." in number:
        raise InvalidInput(f"{text!r}: only GRID amounts may have decimals")
    return int(number) * DURATION_UNITS.get(unit or "s", 1)


def parameter_change(contracts: Contracts, spec: str) -> Action:
    """`escrow.protocolFeeBps=300` -> the call escrow.setProtocolFeeBps(300), made by the timelock."""
    match = re.fullmatch(r"\s*(\w+)\.(\w+)\s*=\s*(.+)", spec)
    if not match:
        raise InvalidInput(
            f"--set {spec!r}: expected CONTRACT.PARAMETER=VALUE, e.g. escrow.protocolFeeBps=300"
        )
    contract_name, parameter, raw_value = match.groups()
    bound = contracts.by_name(contract_name)
    setter = "set" + parameter[0].upper() + parameter[1:]
    setters = {
        item["name"]: item
        for item in bound.abi
        if item.get("type") == "function" and item["name"].startswith("set") and len(item["inputs"]) == 1
    }
    if setter not in setters:
        known = ", ".join(sorted(n[3].lower() + n[4:] for n in setters)) or "none"
        raise InvalidInput(f"{contract_name} has no governed parameter {parameter!r} (known: {known})")
    value = parse_value(raw_value, setters[setter]["inputs"][0]["type"])
    return Action(bound.address, 0, bound.encode(setter, value), f"{contract_name}.{setter}({value})")


def treasury_transfer(contracts: Contracts, spec: str) -> Action:
    """`0xRecipient=500GRID` -> the treasury (timelock) transfers GRID to the recipient."""
    recipient, sep, amount = spec.partition("=")
    if not sep:
        raise InvalidInput(f"--spend {spec!r}: expected ADDRESS=AMOUNT, e.g. 0xabc...=500GRID")
    to = parse_value(recipient, "address")
    value = parse_value(amount, "uint256")
    token = contracts.token
    return Action(token.address, 0, token.encode("transfer", to, value), f"treasury pays {value} to {to}")


def describe_action(contracts: Contracts, target: str, calldata: bytes) -> str:
    """`escrow.setProtocolFeeBps(300)` for a call to a contract of the deployment, else the raw target."""
    names = {
        "token": contracts.token,
        "registry": contracts.registry,
        "escrow": contracts.escrow,
        "timelock": contracts.timelock,
        "governor": contracts.governor,
    }
    for name, bound in names.items():
        if bound.address.lower() == target.lower():
            try:
                fn, args = bound.contract.decode_function_input(calldata)
            except ValueError:
                break
            return f"{name}.{fn.fn_name}({', '.join(str(v) for v in args.values())})"
    return f"call {target} with 0x{calldata[:4].hex()}…"


def _blocks(n: int) -> str:
    return f"{n} block" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------- clock control
def _is_dev(contracts: Contracts) -> bool:
    return contracts.client.chain_id == DEV_CHAIN_ID


def _timestamp_clock(contracts: Contracts) -> bool:
    return "timestamp" in contracts.governor.clock_mode()


def _advance_clock_past(contracts: Contracts, timepoint: int, why: str, say: Say) -> None:
    """Make the next transaction land after governor clock `timepoint` (a block or a timestamp)."""
    client = contracts.client
    if _timestamp_clock(contracts):
        _advance_time_to(contracts, timepoint + 1, why, say)
        return
    latest = client.block_number()
    missing = timepoint + 1 - latest
    if missing <= 0:
        return
    if not _is_dev(contracts):
        raise InvalidInput(f"{why}: wait {_blocks(missing)} more (until block {timepoint + 1}) and retry")
    client.rpc("anvil_mine", [hex(missing)])
    say(f"anvil: mined {_blocks(missing)} ({why})")


def _advance_time_to(contracts: Contracts, timestamp: int, why: str, say: Say) -> None:
    client = contracts.client
    missing = timestamp - client.timestamp()
    if missing <= 0:
        return
    if not _is_dev(contracts):
        raise InvalidInput(f"{why}: wait {missing} more seconds and retry")
    client.rpc("evm_increaseTime", [missing])
    client.rpc("evm_mine")
    say(f"anvil: advanced time by {missing}s ({why})")


# ---------------------------------------------------------------------- the steps
def delegate(contracts: Contracts, *, sender: Signer, to: str | None = None, say: Say = _quiet) -> TxReceipt:
    """Delegate the sender's voting power (to itself by default): needed before it can propose or vote."""
    account = contracts.client.account(sender)
    delegatee = to_checksum_address(to) if to else account.address
    receipt = contracts.token.delegate(delegatee, sender=account)
    say(f"{account.address} delegated its votes to {delegatee}")
    return receipt


def propose(
    contracts: Contracts, actions: Sequence[Action], description: str, *, sender: Signer, say: Say = _quiet
) -> int:
    """Submit a proposal (delegating the proposer's votes to itself first if it has none); returns its id."""
    if not actions:
        raise InvalidInput("a proposal needs at least one action (--set or --spend)")
    if not description.strip():
        raise InvalidInput("a proposal needs a --description")
    account = contracts.client.account(sender)
    token, governor = contracts.token, contracts.governor
    zero = "0x0000000000000000000000000000000000000000"
    if token.get_votes(account.address) == 0 and token.delegates(account.address) == zero:
        receipt = delegate(contracts, sender=account, say=say)
        # proposing checks the votes at clock() - 1: the delegation must be in an earlier timepoint
        timepoint = governor.clock() if _timestamp_clock(contracts) else int(receipt["blockNumber"])
        _advance_clock_past(contracts, timepoint, "delegated votes count from the next timepoint", say)
    elif _is_dev(contracts) and not _timestamp_clock(contracts):
        # A delegation made earlier (`hashgrid dao delegate`) may sit in the latest block. An idle anvil mines
        # only on a transaction, so the gas estimate would run at that block and count no votes at clock() - 1
        # however often it is retried: one empty block puts every earlier delegation in the past.
        _advance_clock_past(contracts, contracts.client.block_number(),
                            "delegated votes count from the next block", say)
    proposal_id, _receipt = governor.propose(
        [a.target for a in actions],
        [a.value for a in actions],
        [a.calldata for a in actions],
        description,
        sender=account,
    )
    for action in actions:
        say(f"proposed: {action.summary}")
    return proposal_id


def find_proposal(contracts: Contracts, proposal_id: int | str) -> Proposal:
    """A proposal by id (or "latest") from its ProposalCreated event."""
    found = all_proposals(contracts)
    if proposal_id == "latest":
        if not found:
            raise NotFound("no proposals yet (`hashgrid dao propose`)")
        return found[-1]
    matches = [p for p in found if p.proposal_id == int(proposal_id)]
    if not matches:
        raise NotFound(f"no proposal {proposal_id} (`hashgrid dao list` shows them)")
    return matches[0]


def all_proposals(contracts: Contracts) -> list[Proposal]:
    """Every proposal, oldest first, from the ProposalCreated events."""
    events = contracts.governor.events(contracts.deployment.start_block, names=["ProposalCreated"])
    return [_proposal(e.args) for e in events]


def _proposal(a: Any) -> Proposal:
    return Proposal(
        int(a["proposalId"]),
        str(a["proposer"]),
        [str(t) for t in a["targets"]],
        [int(v) for v in a["values"]],
        [bytes(c) for c in a["calldatas"]],
        str(a["description"]),
        int(a["voteStart"]),
        int(a["voteEnd"]),
    )


def vote(
    contracts: Contracts,
    proposal_id: int | str,
    support: str,
    *,
    sender: Signer,
    reason: str = "",
    say: Say = _quiet,
) -> TxReceipt:
    """Cast a vote (for / against / abstain); on anvil waits out the voting delay first."""
    if support not in SUPPORT:
        raise InvalidInput(f"--support must be one of {', '.join(SUPPORT)}, not {support!r}")
    proposal = find_proposal(contracts, proposal_id)
    governor = contracts.governor
    if governor.state(proposal.proposal_id) is ProposalState.PENDING:
        _advance_clock_past(contracts, proposal.vote_start, "voting opens after the voting delay", say)
    account = contracts.client.account(sender)
    weight = contracts.token.contract.functions.getPastVotes(account.address, proposal.vote_start).call()
    if weight == 0:
        raise InvalidInput(
            f"{account.address} had no votes at the proposal's snapshot: delegate (`hashgrid dao delegate`) "
            "before a proposal is made"
        )
    receipt = governor.cast_vote(proposal.proposal_id, SUPPORT[support], sender=account, reason=reason)
    say(f"{account.address} voted {support} with {weight / GRID:,.0f} GRID of votes")
    return receipt


def queue(contracts: Contracts, proposal_id: int | str, *, sender: Signer, say: Say = _quiet) -> TxReceipt:
    """Queue a passed proposal in the timelock; on anvil waits out the voting period first."""
    proposal = find_proposal(contracts, proposal_id)
    governor = contracts.governor
    if governor.state(proposal.proposal_id) in (ProposalState.PENDING, ProposalState.ACTIVE):
        _advance_clock_past(contracts, proposal.vote_end, "queueing needs the voting period to end", say)
    state = governor.state(proposal.proposal_id)
    if state is not ProposalState.SUCCEEDED:
        raise InvalidInput(
            f"proposal {proposal.proposal_id} is {state.name.lower()}, not succeeded: cannot queue"
        )
    receipt = governor.queue(
        proposal.targets, proposal.values, proposal.calldatas, proposal.description_hash, sender=sender
    )
    say(f"queued; executable after {contracts.timelock.min_delay()}s of timelock delay")
    return receipt


def execute(contracts: Contracts, proposal_id: int | str, *, sender: Signer, say: Say = _quiet) -> TxReceipt:
    """Execute a queued proposal; on anvil waits out the timelock delay first."""
    proposal = find_proposal(contracts, proposal_id)
    governor = contracts.governor
    state = governor.state(proposal.proposal_id)
    if state is not ProposalState.QUEUED:
        raise InvalidInput(
            f"proposal {proposal.proposal_id} is {state.name.lower()}, not queued: cannot execute"
        )
    _advance_time_to(
        contracts, governor.proposal_eta(proposal.proposal_id), "the timelock delay must pass", say
    )
    receipt = governor.execute(
        proposal.targets, proposal.values, proposal.calldatas, proposal.description_hash, sender=sender
    )
    say("executed")
    return receipt


def status(contracts: Contracts, proposal_id: int | str) -> ProposalStatus:
    proposal = find_proposal(contracts, proposal_id)
    governor = contracts.governor
    against, for_, abstain = governor.proposal_votes(proposal.proposal_id)
    clock = governor.clock()
    # quorum is known once the snapshot is past; before that, show today's (the supply rarely moves)
    quorum = governor.quorum(min(proposal.vote_start, clock - 1))
    return ProposalStatus(
        proposal,
        governor.state(proposal.proposal_id),
        for_,
        against,
        abstain,
        quorum,
        clock,
        governor.proposal_eta(proposal.proposal_id),
    )


def pass_proposal(
    contracts: Contracts, actions: Sequence[Action], description: str, *, sender: Signer, say: Say = _quiet
) -> int:
    """Propose, vote for, queue and execute in one go (dev chain fast path; the sender must hold quorum)."""
    proposal_id = propose(contracts, actions, description, sender=sender, say=say)
    vote(contracts, proposal_id, "for", sender=sender, say=say)
    queue(contracts, proposal_id, sender=sender, say=say)
    execute(contracts, proposal_id, sender=sender, say=say)
    return proposal_id


# ---------------------------------------------------------------------- CLI
app = typer.Typer(
    help="Governance: propose, vote, queue, execute, status.", no_args_is_help=True, add_completion=False
)

DeploymentOpt = Annotated[Path | None, typer.Option("--deployment", help="deployment file")]
RpcOpt = Annotated[str | None, typer.Option("--rpc", help="RPC URL (default: the deployment's)")]
KeyOpt = Annotated[str | None, typer.Option("--key", help="signing key (dev chain default: anvil key 0)")]
IdArg = Annotated[str, typer.Argument(help="proposal id, or `latest`")]


def _id(text: str) -> int | str:
    if text == "latest":
        return text
    if not text.isdigit():
        raise InvalidInput(f"{text!r} is not a proposal id (a number, or `latest`)")
    return int(text)


def _session(deployment: Path | None, rpc: str | None, key: str | None) -> tuple[Contracts, str]:
    from scripts._cli import load, signing_key

    contracts = load(deployment, rpc)
    return contracts, signing_key(key, contracts.client.chain_id)


def _say(message: str) -> None:
    from scripts._cli import console

    console.print(f"  {message}", highlight=False)


JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON (ids and amounts as strings)")]


def _say_err(message: str) -> None:
    from scripts._cli import err_console

    err_console.print(f"  {message}", highlight=False)


def _done(contracts: Contracts, proposal_id: int | str, as_json: bool) -> None:
    """With --json: the proposal's id and state after a step (the steps' lines went to stderr)."""
    if as_json:
        import json

        proposal = find_proposal(contracts, proposal_id)
        state = contracts.governor.state(proposal.proposal_id)
        typer.echo(json.dumps({"proposal_id": str(proposal.proposal_id), "state": state.name.lower()}))


@app.command("propose")
def propose_cmd(
    description: Annotated[str, typer.Option(help="what the proposal does and why")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="CONTRACT.PARAMETER=VALUE (repeatable)")
    ] = None,
    spend: Annotated[list[str] | None, typer.Option(help="ADDRESS=AMOUNT paid from the treasury")] = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose parameter changes (e.g. --set escrow.protocolFeeBps=300) and/or treasury payments."""
    from scripts._cli import console, one_line_errors

    with one_line_errors(), _working("proposing"):
        contracts, signer = _session(deployment, rpc, key)
        actions = [parameter_change(contracts, s) for s in set_ or []]
        actions += [treasury_transfer(contracts, s) for s in spend or []]
        proposal_id = propose(contracts, actions, description, sender=signer,
                              say=_say_err if as_json else _say)
        if as_json:
            _done(contracts, proposal_id, True)
            return
    console.print(f"proposal [bold]{proposal_id}[/]")


@app.command("vote")
def vote_cmd(
    proposal_id: IdArg,
    support: Annotated[str, typer.Option(help="for, against or abstain")] = "for",
    reason: Annotated[str, typer.Option(help="a reason recorded on chain")] = "",
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Vote on a proposal (on anvil, mines past the voting delay first)."""
    from scripts._cli import one_line_errors

    with one_line_errors(), _working("voting (on anvil: mining past the voting delay first)"):
        contracts, signer = _session(deployment, rpc, key)
        vote(contracts, _id(proposal_id), support, sender=signer, reason=reason,
             say=_say_err if as_json else _say)
        _done(contracts, _id(proposal_id), as_json)


@app.command("queue")
def queue_cmd(
    proposal_id: IdArg, deployment: DeploymentOpt = None, rpc: RpcOpt = None, key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a succeeded proposal in the timelock (on anvil, mines past the voting period first)."""
    from scripts._cli import one_line_errors

    with one_line_errors(), _working("queueing (on anvil: mining past the voting period first)"):
        contracts, signer = _session(deployment, rpc, key)
        queue(contracts, _id(proposal_id), sender=signer, say=_say_err if as_json else _say)
        _done(contracts, _id(proposal_id), as_json)


@app.command("execute")
def execute_cmd(
    proposal_id: IdArg, deployment: DeploymentOpt = None, rpc: RpcOpt = None, key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Execute a queued proposal (on anvil, advances time past the timelock delay first)."""
    from scripts._cli import one_line_errors

    with one_line_errors(), _working("executing (on anvil: skipping the timelock delay first)"):
        contracts, signer = _session(deployment, rpc, key)
        execute(contracts, _id(proposal_id), sender=signer, say=_say_err if as_json else _say)
        _done(contracts, _id(proposal_id), as_json)


def _status_json(contracts: Contracts, st: ProposalStatus) -> dict[str, Any]:
    return {
        "proposal_id": str(st.proposal.proposal_id), "proposer": st.proposal.proposer,
        "description": st.proposal.description, "state": st.state.name.lower(),
        "votes_for": str(st.votes_for), "votes_against": str(st.votes_against),
        "votes_abstain": str(st.votes_abstain), "quorum": str(st.quorum),
        "vote_start": st.proposal.vote_start, "vote_end": st.proposal.vote_end, "clock": st.clock,
        "eta": st.eta or None,
        "actions": [describe_action(contracts, t, c)
                    for t, c in zip(st.proposal.targets, st.proposal.calldatas, strict=True)],
    }


@app.command("list")
def list_cmd(as_json: JsonOpt = False, deployment: DeploymentOpt = None, rpc: RpcOpt = None) -> None:
    """Every proposal, newest first: id, state, votes for/against, description."""
    import json

    from scripts._cli import console, load, one_line_errors

    with one_line_errors(), _working("reading proposals"):
        contracts = load(deployment, rpc)
        rows = [status(contracts, p.proposal_id) for p in reversed(all_proposals(contracts))]
    if as_json:
        typer.echo(json.dumps({"data": [_status_json(contracts, st) for st in rows], "count": len(rows)},
                              indent=2))
        return
    if not rows:
        console.print("no proposals yet (`hashgrid dao propose`)")
        return
    for st in rows:
        console.print(f"{st.proposal.proposal_id}  {st.state.name.lower():<9}  for "
                      f"{st.votes_for / GRID:,.0f} / against {st.votes_against / GRID:,.0f} GRID  "
                      f"{st.proposal.description}", highlight=False, soft_wrap=True)


def _working(what: str) -> Any:
    """A spinner on a terminal while a slow chain read or wait runs (nothing when piped)."""
    from scripts._cli import err_console

    return err_console.status(f"{what}…")


@app.command("status")
def status_cmd(proposal_id: IdArg, as_json: JsonOpt = False, deployment: DeploymentOpt = None,
               rpc: RpcOpt = None) -> None:
    """Show a proposal's state, votes, quorum and actions."""
    import json

    from scripts._cli import console, load, one_line_errors

    with one_line_errors(), _working("reading the proposal"):
        contracts = load(deployment, rpc)
        st = status(contracts, _id(proposal_id))
    if as_json:
        typer.echo(json.dumps(_status_json(contracts, st), indent=2))
        return
    table = Table(title=f"proposal {st.proposal.proposal_id}", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("description", st.proposal.description),
        ("state", st.state.name.lower()),
        (
            "votes for / against / abstain",
            f"{st.votes_for / GRID:,.0f} / {st.votes_against / GRID:,.0f} / "
            f"{st.votes_abstain / GRID:,.0f} GRID",
        ),
        ("quorum", f"{st.quorum / GRID:,.0f} GRID"),
        ("voting", f"clock {st.proposal.vote_start} to {st.proposal.vote_end} (now {st.clock})"),
        ("executable at", str(st.eta) if st.eta else "-"),
    ]
    rows += [
        (f"action {i + 1}", describe_action(contracts, t, c))
        for i, (t, c) in enumerate(zip(st.proposal.targets, st.proposal.calldatas, strict=True))
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


@app.command("delegate")
def delegate_cmd(
    to: Annotated[str | None, typer.Option(help="delegatee address (default: yourself)")] = None,
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    key: KeyOpt = None,
) -> None:
    """Delegate your GRID voting power (to yourself by default) so it counts in proposals made afterwards."""
    from scripts._cli import one_line_errors

    with one_line_errors(), _working("delegating"):
        contracts, signer = _session(deployment, rpc, key)
        if to is not None and not is_address(to):
            raise InvalidInput(f"{to!r} is not an address")
        delegate(contracts, sender=signer, to=to, say=_say)


if __name__ == "__main__":
    app()
