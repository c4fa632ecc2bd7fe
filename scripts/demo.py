"""`make up` / `hashgrid demo`: a fresh anvil, the contracts deployed, and the on-chain life of a few tasks
played by anvil's dev accounts (one customer, providers of which one is dishonest), with each outcome and the
explorer's view printed. Finalize only credits payments, refunds and fees in the escrow; at the end everyone
claims their credits, so the summary's wallet changes show the whole outcome. Ctrl-C or the end stops anvil
and leaves nothing running.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Annotated

import typer
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts, commitment_for
from hashgrid.config import ANVIL_DEV_KEYS
from hashgrid.errors import HashgridError
from hashgrid.explorer import Explorer
from scripts.deploy import deploy
from scripts.devnet import GRID, DevAccounts, fund, post, spec_hash_of, stake_provider
from scripts.explorer import grid, provider_tables, short, stats_table, task_tables
from scripts.localnet import Anvil

PRICE = 10 * GRID
STAKE = 1_000 * GRID
console = Console()
app = typer.Typer(help="Play the on-chain life of a few tasks on a fresh local chain.", add_completion=False)


@dataclass(frozen=True)
class Scenario:
    """One task of the demo: who runs it, who lies or stays away, and which escrow path pays for it."""

    title: str
    providers: tuple[int, ...]  # indexes into the provider list
    quorum: int
    permit: bool
    no_show: int | None = None  # index of a provider that never commits


SCENARIOS = (
    Scenario("three honest replicas (approve + postTask)", (0, 1, 2), 2, permit=False),
    Scenario("the dishonest provider outvoted (permit)", (0, 1, 3), 2, permit=True),
    Scenario("unanimity required, one liar: no quorum (approve)", (1, 2, 3), 3, permit=False),
    Scenario("a provider that never shows up (permit)", (0, 2, 1), 2, permit=True, no_show=1),
)


class Demo:
    def __init__(self, contracts: Contracts, accounts: DevAccounts, dishonest: int) -> None:
        self.contracts = contracts
        self.accounts = accounts
        self.dishonest = dishonest
        self.names: dict[str, str] = {
            accounts.customer.address: "customer",
            accounts.deployer.address: "marketplace",
            contracts.timelock.address: "treasury",
        }
        for i, p in enumerate(accounts.providers):
            self.names[p.address] = f"provider-{i + 1}" + (" (dishonest)" if i == dishonest else "")

    def name(self, address: str) -> str:
        return self.names.get(address, short(address))

    def step(self, message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False, soft_wrap=True)

    def setup(self) -> None:
        fund(self.contracts, self.accounts, provider_amount=5_000 * GRID)
        self.step(
            f"funded the customer with {grid(100_000 * GRID)} and {len(self.accounts.providers)} providers "
            f"with {grid(5_000 * GRID)} each"
        )
        for provider in self.accounts.providers:
            stake_provider(self.contracts, provider, STAKE)
            self.step(f"{self.name(provider.address)} registered and staked {grid(STAKE)}")

    def play(self, number: int, scenario: Scenario) -> int:
        contracts, escrow = self.contracts, self.contracts.escrow
        operator = self.accounts.deployer
        chosen = [self.accounts.providers[i] for i in scenario.providers]
        console.print(Rule(f"task {number}: {scenario.title}"))
        task_id, _ = post(
            contracts,
            self.accounts.customer,
            spec_hash_of(f"demo task {number}"),
            replicas=3,
            quorum=scenario.quorum,
            max_price=PRICE,
            permit=scenario.permit,
        )
        path = "permit" if scenario.permit else "approve"
        self.step(
            f"customer posted task {task_id} ({path}): 3 replicas, quorum {scenario.quorum}, "
            f"escrowed {grid(escrow.escrow_for(3, PRICE))}"
        )
        escrow.assign(task_id, [p.address for p in chosen], sender=operator)
        self.step(f"matcher assigned {', '.join(self.name(p.address) for p in chosen)}")

        truth = keccak(text=f"result of demo task {number}")
        answers: dict[str, bytes] = {}
        for i, provider in zip(scenario.providers, chosen, strict=True):
            if scenario.no_show is not None and scenario.providers[scenario.no_show] == i:
                continue
            answers[provider.address] = (
                keccak(text=f"a made-up result {number}") if i == self.dishonest else truth
            )
        salts = {a: keccak(text=f"salt {number} {a}") for a in answers}
        for provider in chosen:
            if provider.address in answers:
                a = provider.address
                escrow.commit(task_id, commitment_for(answers[a], salts[a], a), sender=provider)
                self.step(f"{self.name(a)} committed")
        if len(answers) < len(chosen):
            window = escrow.param("commitWindow")
            contracts.client.rpc("evm_increaseTime", [window + 1])
            contracts.client.rpc("evm_mine")
            self.step(f"anvil: skipped {window + 1}s past the commit window (a provider never committed)")
        for provider in chosen:
            if provider.address in answers:
                a = provider.address
                escrow.reveal(task_id, answers[a], salts[a], sender=provider)
                self.step(f"{self.name(a)} revealed {short('0x' + answers[a].hex())}")

        metered = {
            str(p.address): 6 * GRID + i * GRID // 4 for i, p in enumerate(chosen)
        }  # billing's amounts
        reports = escrow.build_reports(task_id, metered)  # sorted by address; 0 for non-agreeing replicas
        escrow.finalize(task_id, reports, sender=operator)
        paying = [f"{self.name(r.provider)} {grid(r.payment)}" for r in reports if r.payment]
        self.step(
            f"settler finalized task {task_id} from {len(reports)} replica reports; metered payments: "
            f"{', '.join(paying) or 'none'}"
        )
        self.outcome(task_id)
        return task_id

    def claims(self, accounts: Sequence[str]) -> None:
        """Everyone withdraws what finalize credited: providers and the customer claim themselves, the
        marketplace pushes the treasury's fees with claimFor."""
        escrow = self.contracts.escrow
        signers: dict[str, LocalAccount] = {
            a.address: a for a in (self.accounts.customer, *self.accounts.providers)
        }
        table = Table(title="escrow credits, claimed", title_justify="left")
        for column in ("account", "claimed", "by"):
            table.add_column(column)
        for address in accounts:
            owed = escrow.claimable(address)
            if not owed:
                table.add_row(self.name(address), "0", "-")
                continue
            signer = signers.get(address)
            if signer is not None:
                receipt = escrow.claim(sender=signer)
                by = "itself (claim)"
            else:
                receipt = escrow.claim_for(address, sender=self.accounts.deployer)
                by = "marketplace (claimFor)"
            table.add_row(self.name(address), grid(escrow.claimed_amount(receipt)), by)
        console.print(table)
        self.step(f"all credits claimed; escrow owes {grid(escrow.total_claimable())} in credits")

    def outcome(self, task_id: int) -> None:
        h = Explorer(self.contracts).task_history(task_id)
        colour = "green" if h.state == "Settled" else "red"
        lines = [f"[bold {colour}]{h.state}[/]"]
        if h.accepted_result:
            lines.append(f"accepted result {short(h.accepted_result)} ({h.agreeing} agreeing)")
        paid = [f"{self.name(r.provider)} {grid(r.paid)}" for r in h.replica_views if r.paid]
        slashed = [
            f"{self.name(r.provider)} {grid(r.slashed)} ({r.outcome})" for r in h.replica_views if r.slashed
        ]
        lines.append("credited: " + (", ".join(paid) or "nobody"))
        lines.append("slashed: " + (", ".join(slashed) or "nobody"))
        lines.append(f"fee credited {grid(h.fee)}; refund credited to the customer {grid(h.refunded)}")
        console.print("  " + "\n  ".join(lines))


def run_demo(providers: int = 4, port: int | None = None) -> None:
    """The whole demo; returns when done, with anvil stopped."""
    if not 4 <= providers <= len(ANVIL_DEV_KEYS) - 2:
        raise typer.BadParameter(f"--providers must be between 4 and {len(ANVIL_DEV_KEYS) - 2}")
    accounts = DevAccounts.from_keys(providers=providers)
    with Anvil(port=port) as node:
        console.print(f"[bold]Hashgrid demo[/] on anvil at {node.url} (dev keys: this chain only)")
        client = ChainClient(node.url)
        deployment = deploy(
            client,
            deployer=accounts.deployer,
            progress=lambda m: console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {m}"),
        )
        contracts = Contracts.load(client, deployment)
        demo = Demo(contracts, accounts, dishonest=3)
        token = contracts.token
        watched = [
            accounts.customer.address,
            *(p.address for p in accounts.providers),
            contracts.timelock.address,
        ]
        demo.setup()
        before = {a: token.balance_of(a) for a in watched}
        stake_before = {p.address: contracts.registry.stake_of(p.address) for p in accounts.providers}
        task_ids = [demo.play(i + 1, scenario) for i, scenario in enumerate(SCENARIOS)]
        console.print(Rule("claims"))
        demo.claims(watched)

        console.print(Rule("the explorer's view (from chain events alone)"))
        explorer = Explorer(contracts)
        for table in task_tables(explorer.task_history(task_ids[1])):
            console.print(table)
        for table in provider_tables(explorer.provider_history(accounts.providers[3].address)):
            console.print(table)
        console.print(stats_table(explorer.network_stats()))

        console.print(Rule("summary"))
        summary = Table(title=f"{len(task_ids)} tasks on chain {client.chain_id}", title_justify="left")
        for column in ("account", "wallet change", "stake change"):
            summary.add_column(column)
        for address in watched:
            change = token.balance_of(address) - before[address]
            stake = (
                contracts.registry.stake_of(address) - stake_before[address] if address in stake_before else 0
            )
            summary.add_row(
                demo.name(address), _signed(change), _signed(stake) if address in stake_before else ""
            )
        console.print(summary)
        states = explorer.network_stats().tasks_by_state
        console.print(
            f"done: {', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))}; "
            f"escrow holds {grid(token.balance_of(contracts.escrow.address))} "
            f"({grid(contracts.escrow.total_locked())} locked, "
            f"{grid(contracts.escrow.total_claimable())} unclaimed). Stopping anvil."
        )


def _signed(amount: int) -> str:
    return ("+" if amount > 0 else "") + grid(amount) if amount else "0"


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@app.callback(invoke_without_command=True)
def main(
    providers: Annotated[int, typer.Option(help="providers to stake (4-8); the 4th is dishonest")] = 4,
    port: Annotated[int | None, typer.Option(help="anvil port (default: a free one)")] = None,
) -> None:
    """Start anvil, deploy, play a few tasks with dev accounts, print outcomes; stop anvil at the end."""
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in handled}
    try:
        run_demo(providers=providers, port=port)
    except KeyboardInterrupt:
        console.print("\ninterrupted: anvil stopped, nothing left running")
        raise typer.Exit(130) from None
    except HashgridError as exc:
        from rich.markup import escape

        from hashgrid.exits import error_line, exit_code_for

        console.print(f"[red]error:[/] {escape(error_line(exc))}", highlight=False)
        raise typer.Exit(int(exit_code_for(exc))) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    app()
