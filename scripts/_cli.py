"""What the scripts' command lines share: load the deployment and a client, pick the signing key, and turn
any Hashgrid error into one line with the exit code of hashgrid.exits' table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from hashgrid.config import ANVIL_DEV_KEYS, DEV_CHAIN_ID, Settings
from hashgrid.errors import HashgridError, InvalidInput

console = Console()
err_console = Console(stderr=True)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Report a HashgridError as `error: ...` on stderr (a revert in words) with hashgrid.exits' code."""
    from rich.markup import escape

    from hashgrid.exits import error_line, exit_code_for

    try:
        yield
    except HashgridError as exc:
        err_console.print(f"[red]error:[/] {escape(error_line(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(int(exit_code_for(exc))) from None


def load(deployment_file: Path | None = None, rpc: str | None = None) -> Contracts:
    """The bound contracts of the deployment file (default: Settings.deployment_path)."""
    settings = Settings()
    deployment = Deployment.load(deployment_file or settings.deployment_path)
    client = ChainClient(rpc or deployment.rpc_url, tx_timeout=settings.tx_timeout_seconds)
    if client.chain_id != deployment.chain_id:
        raise InvalidInput(
            f"the RPC serves chain {client.chain_id} but the deployment is for chain {deployment.chain_id}"
        )
    return Contracts.load(client, deployment)


def signing_key(key: str | None, chain_id: int) -> str:
    """--key, else HASHGRID_PRIVATE_KEY, else (dev chain only) anvil's first dev key."""
    chosen = key or Settings().private_key
    if chosen:
        if chosen.lower() in ANVIL_DEV_KEYS and chain_id != DEV_CHAIN_ID:
            raise InvalidInput(f"an anvil dev key cannot sign on chain {chain_id}")
        return chosen
    if chain_id == DEV_CHAIN_ID:
        return ANVIL_DEV_KEYS[0]
    raise InvalidInput("no signing key: pass --key or set HASHGRID_PRIVATE_KEY")
