"""`hashgrid explorer task ID | provider ADDR | stats`: the chain's own record, as rich tables or JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_utils import is_address
from pydantic import BaseModel
from rich.table import Table

from hashgrid.chain.reverts import when
from hashgrid.errors import InvalidInput
from hashgrid.explorer import Explorer, NetworkStats, ProviderHistory, TaskHistory
from scripts._cli import console, load, one_line_errors

GRID = 10**18
app = typer.Typer(
    help="Read tasks and providers from chain events.", no_args_is_help=True, add_completion=False
)

DeploymentOpt = Annotated[Path | None, typer.Option("--deployment", help="deployment file")]
RpcOpt = Annotated[str | None, typer.Option("--rpc", help="RPC URL (default: the deployment's)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of tables")]


def grid(amount: int) -> str:
    """A token amount for people, exact (a 0.0002 GRID fee is not rounded to 0): 12.5 GRID."""
    whole, frac = divmod(abs(int(amount)), GRID)
    digits = f"{frac:018d}".rstrip("0")
    sign = "-" if amount < 0 else ""
    return f"{sign}{whole:,}" + (f".{digits}" if digits else "") + " GRID"


def short(value: str | None, keep: int = 10) -> str:
    """A hash or address cut for a terminal's table; whole when the output is piped (scripts read it)."""
    if not value:
        return "-"
    if not console.is_terminal or len(value) <= 2 * keep:
        return value
    return f"{value[:keep]}…{value[-4:]}"


_AMOUNT = re.compile(r"escrow|paid|fee|refund|slash|stake|unbond|reward|claim|withdraw|price|amount|locked")


def json_safe(value: Any, key: str = "") -> Any:
    """Amounts (wei) as decimal strings: JSON numbers past 2**53 lose digits in most parsers."""
    if isinstance(value, dict):
        return {k: json_safe(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v, key) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and _AMOUNT.search(key):
        return str(value)
    return value


def fold(table: Table) -> Table:
    """Wrap long cells instead of cutting them with "…" (a piped table is 80 columns wide)."""
    for column in table.columns:
        column.overflow = "fold"
    return table


def task_tables(h: TaskHistory) -> list[Table]:
    summary = Table(title=f"task {h.task_id}: {h.state}", show_header=False, title_justify="left")
    for name, value in [
        ("customer", h.customer),
        ("spec hash", h.spec_hash),
        ("replicas / quorum / paid for", f"{h.replicas} / {h.quorum} / {h.max_replicas}"),
        ("cap per replica", grid(h.max_price_per_replica)),
        ("escrowed", grid(h.escrowed)),
        ("accepted result", h.accepted_result or "-"),
        ("paid / fee / refunded (credited)", f"{grid(h.paid)} / {grid(h.fee)} / {grid(h.refunded)}"),
        ("slashed", grid(sum(s.amount for s in h.slashes))),
    ]:
        summary.add_row(name, value)
    replicas = Table(title="replicas", title_justify="left")
    for column in ("#", "round", "provider", "commitment", "revealed", "outcome", "paid", "slashed"):
        replicas.add_column(column)
    for r in h.replica_views:
        style = {"Agreed": "green", "Dissented": "red", "NoShow": "yellow"}.get(r.outcome or "", "")
        replicas.add_row(
            str(r.replica_index),
            str(r.round),
            r.provider,
            short(r.commitment),
            short(r.revealed_hash),
            f"[{style}]{r.outcome or '-'}[/]" if style else (r.outcome or "-"),
            grid(r.paid),
            grid(r.slashed),
        )
    return [summary, replicas]


def provider_tables(h: ProviderHistory) -> list[Table]:
    summary = Table(title=f"provider {h.provider}", show_header=False, title_justify="left")
    for name, value in [
        ("registered", f"yes, operator {h.operator}" if h.registered else "no"),
        ("capabilities", h.capabilities_uri or "-"),
        ("stake", grid(h.stake)),
        ("unbonding", f"{grid(h.unbonding)} (release {when(h.unbonding_release)})" if h.unbonding else "-"),
        ("active assignments", str(h.active_assignments)),
        ("staked in total", grid(h.staked_in)),
        ("rewards (credited)", grid(h.rewards)),
        ("claimed / claimable", f"{grid(h.claimed)} / {grid(h.claimable)}"),
        ("slashed", grid(h.slashed)),
        ("stake withdrawn", grid(h.withdrawn)),
    ]:
        summary.add_row(name, value)
    tasks = Table(title="tasks", title_justify="left")
    for column in ("task", "outcome", "paid", "slashed"):
        tasks.add_column(column)
    for t in h.tasks:
        tasks.add_row(str(t.task_id), t.outcome or "in progress", grid(t.paid), grid(t.slashed))
    return [summary, tasks]


def stats_table(s: NetworkStats) -> Table:
    table = Table(
        title=f"network (blocks {s.from_block}-{s.to_block})", show_header=False, title_justify="left"
    )
    states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(s.tasks_by_state.items())) or "-"
    for name, value in [
        ("tasks", f"{s.tasks} ({states})"),
        ("providers", str(s.providers)),
        ("escrowed", grid(s.escrowed)),
        ("paid to providers", grid(s.paid_to_providers)),
        ("protocol fees", grid(s.protocol_fees)),
        ("refunded", grid(s.refunded)),
        ("slashed", grid(s.slashed)),
        ("staked now", grid(s.total_staked)),
        ("unbonding now", grid(s.total_unbonding)),
        ("locked in escrow now", grid(s.total_locked)),
        ("credits claimed", grid(s.claimed)),
        ("credits unclaimed now", grid(s.total_claimable)),
    ]:
        table.add_row(name, value)
    return table


def _show(model: BaseModel, tables: list[Table], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(json_safe(model.model_dump(mode="json")), indent=2))
        return
    for table in tables:
        console.print(fold(table))


@app.command()
def task(
    task_id: Annotated[int, typer.Argument(help="task id")],
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json: JsonOpt = False,
) -> None:
    """A task's spec hash, replicas, commitments, reveals, accepted result, payments and slashes."""
    with one_line_errors():
        history = Explorer(load(deployment, rpc)).task_history(task_id)
    _show(history, task_tables(history), json)


@app.command()
def provider(
    address: Annotated[str, typer.Argument(help="provider address")],
    deployment: DeploymentOpt = None,
    rpc: RpcOpt = None,
    json: JsonOpt = False,
) -> None:
    """A provider's stake, unbonding, tasks, rewards and slashes."""
    with one_line_errors():
        if not is_address(address):
            raise InvalidInput(f"{address!r} is not an address")
        history = Explorer(load(deployment, rpc)).provider_history(address)
    _show(history, provider_tables(history), json)


@app.command()
def stats(deployment: DeploymentOpt = None, rpc: RpcOpt = None, json: JsonOpt = False) -> None:
    """Network totals: tasks by state, escrowed, paid, fees, refunds, slashes, stake."""
    with one_line_errors():
        result = Explorer(load(deployment, rpc)).network_stats()
    _show(result, [stats_table(result)], json)


if __name__ == "__main__":
    app()
