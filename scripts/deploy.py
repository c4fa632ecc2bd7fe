"""Deploy GridToken, ProviderRegistry, TaskEscrow, TimelockController and GridGovernor, wire them so that
governance owns every parameter and the treasury, and write the deployment file every service reads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel

from hashgrid.chain.client import ChainClient, Signer
from hashgrid.chain.compile import CompiledContract, compile_contracts
from hashgrid.chain.deployment import Deployment
from hashgrid.config import Settings
from scripts._cli import console, one_line_errors, signing_key

GRID = 10**18
HOUR = 3600
DAY = 24 * HOUR
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DEFAULT_ADMIN_ROLE = b"\x00" * 32
ROLES = {
    name: keccak(text=name)
    for name in ("MATCHER_ROLE", "SETTLER_ROLE", "PROPOSER_ROLE", "CANCELLER_ROLE", "EXECUTOR_ROLE")
}


class DeployParams(BaseModel):
    """Initial protocol parameters (afterwards the DAO owns them). Defaults suit the dev network."""

    initial_supply: int = 100_000_000 * GRID
    min_stake: int = 100 * GRID
    unbonding_delay: int = DAY
    protocol_fee_bps: int = 200
    commit_window: int = 10 * 60
    reveal_window: int = 10 * 60
    expiry_grace: int = HOUR
    slash_dissent_bps: int = 5_000
    slash_no_show_bps: int = 1_000
    timelock_delay: int = HOUR
    voting_delay: int = 1  # blocks
    voting_period: int = 50  # blocks
    proposal_threshold: int = 1_000 * GRID
    quorum_numerator: int = 4  # percent of the supply
    keep_operator_roles: bool = True  # the deployer keeps MATCHER_ROLE and SETTLER_ROLE (dev marketplace key)


def deploy(
    client: ChainClient,
    params: DeployParams | None = None,
    *,
    deployer: Signer,
    compiled: dict[str, CompiledContract] | None = None,
    out: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Deployment:
    """Deploy and wire everything; write the deployment file to `out` when given."""
    params = params or DeployParams()
    compiled = compiled or compile_contracts()
    account = client.account(deployer)
    say = progress or (lambda _message: None)
    start_block = client.block_number() + 1
    addresses: dict[str, str] = {}

    def create(name: str, *args: Any) -> Any:
        contract = compiled[name]
        address, _receipt = client.deploy(contract.abi, contract.bytecode, *args, sender=account)
        checksummed = to_checksum_address(address)
        addresses[name] = checksummed
        say(f"deployed {name} at {address}")
        return client.w3.eth.contract(address=checksummed, abi=contract.abi)

    def send(contract: Any, fn: str, *args: Any) -> None:
        client.transact(getattr(contract.functions, fn)(*args), sender=account)

    for contract in compiled.values():
        client.decoder.add_abi(contract.abi)
    me = account.address
    token = create("GridToken", me, params.initial_supply)
    timelock = create("TimelockController", params.timelock_delay, [], [ZERO_ADDRESS], me)
    registry = create(
        "ProviderRegistry",
        token.address,
        me,
        timelock.address,
        params.min_stake,
        params.unbonding_delay,
    )
    escrow = create(
        "TaskEscrow",
        token.address,
        registry.address,
        me,
        timelock.address,
        params.protocol_fee_bps,
        params.commit_window,
        params.reveal_window,
        params.expiry_grace,
        params.slash_dissent_bps,
        params.slash_no_show_bps,
    )
    send(registry, "setEscrow", escrow.address)
    governor = create(
        "GridGovernor",
        token.address,
        timelock.address,
        params.voting_delay,
        params.voting_period,
        params.proposal_threshold,
        params.quorum_numerator,
    )

    send(timelock, "grantRole", ROLES["PROPOSER_ROLE"], governor.address)
    send(timelock, "grantRole", ROLES["CANCELLER_ROLE"], governor.address)
    roles: dict[str, str] = {"governor": governor.address, "treasury": timelock.address}
    if params.keep_operator_roles:
        for role, key in (("MATCHER_ROLE", "matcher"), ("SETTLER_ROLE", "settler")):
            if not escrow.functions.hasRole(ROLES[role], me).call():
                send(escrow, "grantRole", ROLES[role], me)
            roles[key] = me
    for contract in (registry, escrow):
        send(contract, "grantRole", DEFAULT_ADMIN_ROLE, timelock.address)
    for contract in (registry, escrow, timelock):
        send(contract, "renounceRole", DEFAULT_ADMIN_ROLE, me)
    say("wired: governor proposes to the timelock; the timelock owns registry, escrow and the treasury")

    deployment = Deployment(
        chain_id=client.chain_id,
        rpc_url=client.rpc_url,
        addresses=addresses,
        abis={name: compiled[name].abi for name in addresses},
        start_block=start_block,
        deployer=me,
        roles=roles,
        params=params.model_dump(),
    )
    if out is not None:
        deployment.save(out)
        say(f"wrote {out}")
    return deployment


# ---------------------------------------------------------------------- CLI
app = typer.Typer(help="Deploy the contracts and write the deployment file.", add_completion=False)


@app.callback(invoke_without_command=True)
def main(
    rpc: Annotated[str | None, typer.Option(help="RPC URL (default: HASHGRID_RPC_URL)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="deployment file (default: state_dir/deployment.json)")
    ] = None,
    key: Annotated[str | None, typer.Option(help="deployer private key (dev chain: anvil key 0)")] = None,
) -> None:
    """Compile, deploy and wire the contracts, then write the deployment file."""
    settings = Settings()
    client = ChainClient(rpc or settings.rpc_url, tx_timeout=settings.tx_timeout_seconds)
    path = out or settings.deployment_path
    with one_line_errors():
        deployer = signing_key(key, client.chain_id)
        deployment = deploy(client, deployer=deployer, out=path, progress=lambda m: console.print(f"  {m}"))
    console.print(f"[green]deployed[/] on chain {deployment.chain_id}: {path}")


if __name__ == "__main__":
    app()
