"""`hashgrid task ...`, `hashgrid wallet ...` and `hashgrid faucet`: the customer's commands, a thin layer
over `hashgrid.client.HashgridClient`.

The signing key: --keystore FILE (password from HASHGRID_KEYSTORE_PASSWORD or a prompt), --key-env VAR (an
environment variable holding the key), HASHGRID_PRIVATE_KEY, else the default wallet made by `hashgrid wallet
new` (<state_dir>/wallets/default.json). Errors are one line on stderr with the exit codes of
hashgrid.exits (0 ok, 1 failed, 2 bad input, 4 unavailable, 5 timed out, 130 interrupted).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hashgrid.config import ANVIL_DEV_KEYS, DEV_CHAIN_ID, Settings
from hashgrid.errors import ConfigError, HashgridError, InvalidInput
from hashgrid.exits import cli_errors, interrupted
from hashgrid.signing import KeySigner, checksum_address

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")  # and, when mixed-case, a valid EIP-55 checksum

GRID = 10**18
PASSWORD_ENV = "HASHGRID_KEYSTORE_PASSWORD"

task_app = typer.Typer(help="Submit tasks and follow them: init, estimate, submit, list, wait, status, logs, "
                            "result, invoice, cancel.", no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False)
wallet_app = typer.Typer(help="The customer's wallet: new, import, balance, claim.", no_args_is_help=True,
                         add_completion=False, pretty_exceptions_enable=False)

MarketOpt = Annotated[str | None, typer.Option("--marketplace", help="marketplace URL "
                                               "(default: HASHGRID_MARKETPLACE_URL)")]
RpcOpt = Annotated[str | None, typer.Option("--rpc", help="RPC URL (default: HASHGRID_RPC_URL)")]
DeploymentOpt = Annotated[Path | None, typer.Option("--deployment", help="deployment file "
                                                    "(default: <state_dir>/deployment.json)")]
KeystoreOpt = Annotated[Path | None, typer.Option("--keystore", help="encrypted keystore to sign with "
                                                  f"(password from {PASSWORD_ENV} or a prompt)")]
KeyEnvOpt = Annotated[str | None, typer.Option("--key-env", help="name of an environment variable holding "
                                               "the private key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
TaskIdArg = Annotated[int, typer.Argument(help="the on-chain task id", min=0)]


# ---------------------------------------------------------------- shared helpers


def grid(amount: int, unit: str = "GRID") -> str:
    """wei as a readable amount: 12.5 GRID."""
    whole = f"{amount / GRID:,.6f}".rstrip("0").rstrip(".")
    return f"{whole} {unit}"


def wallets_dir() -> Path:
    return Settings().state_dir / "wallets"


def _password(confirm: bool = False) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if not sys.stdin.isatty():
            raise ConfigError(f"the keystore needs a password: set {PASSWORD_ENV}")
        password = typer.prompt("keystore password", hide_input=True, confirmation_prompt=confirm)
    return password


def _default_keystore() -> Path:
    return wallets_dir() / "default.json"


def resolve_key(keystore: Path | None, key_env: str | None, chain_id: int) -> str:
    """The signing key: --keystore, --key-env, HASHGRID_PRIVATE_KEY, else the default wallet."""
    from hashgrid.keystore import load_keystore

    if keystore is not None:
        if not keystore.is_file():
            raise InvalidInput(f"no keystore at {keystore}")
        key = load_keystore(keystore, _password())
    elif key_env is not None:
        key = os.environ.get(key_env, "")
        if not key:
            raise InvalidInput(f"environment variable {key_env} is not set")
    elif os.environ.get("HASHGRID_PRIVATE_KEY"):
        key = os.environ["HASHGRID_PRIVATE_KEY"]
    elif _default_keystore().is_file():
        key = load_keystore(_default_keystore(), _password())
    else:
        raise InvalidInput("no signing key: pass --keystore or --key-env, set HASHGRID_PRIVATE_KEY, or run "
                           "`hashgrid wallet new`")
    if key.lower() in ANVIL_DEV_KEYS and chain_id != DEV_CHAIN_ID:
        raise InvalidInput(f"an anvil dev key cannot sign on chain {chain_id}")
    return key


def resolve_address(address: str | None, keystore: Path | None, key_env: str | None) -> str:
    """An address given, else the one of the key the other commands would use (keystores stay encrypted)."""
    from hashgrid.keystore import keystore_address

    if address is not None:
        if not _ADDRESS.fullmatch(address) or (address[2:] not in (address[2:].lower(), address[2:].upper())
                                               and checksum_address(address) != address):
            raise InvalidInput(f"not an address: {address}")
        return checksum_address(address)
    if keystore is None and key_env is None and not os.environ.get("HASHGRID_PRIVATE_KEY") \
            and _default_keystore().is_file():
        keystore = _default_keystore()
    if keystore is not None:
        if not keystore.is_file():
            raise InvalidInput(f"no keystore at {keystore}")
        return checksum_address(keystore_address(keystore))
    key = resolve_key(None, key_env, DEV_CHAIN_ID)
    try:
        return KeySigner(key).address
    except (ValueError, TypeError):
        raise InvalidInput("not a valid private key") from None


def _deployment(deployment: Path | None) -> Any:
    from hashgrid.chain.deployment import Deployment

    return Deployment.load(deployment or Settings().deployment_path)


def make_client(marketplace: str | None, rpc: str | None, deployment: Path | None, keystore: Path | None,
                key_env: str | None) -> Any:
    """A HashgridClient from the options and HASHGRID_* settings."""
    from hashgrid.client import HashgridClient

    settings = Settings()
    loaded = _deployment(deployment)
    key = resolve_key(keystore, key_env, loaded.chain_id)
    return HashgridClient(marketplace or settings.marketplace_url, rpc or settings.rpc_url, loaded, key,
                          tx_timeout=settings.tx_timeout_seconds)


def _contracts(rpc: str | None, deployment: Path | None) -> Any:
    from hashgrid.chain.client import ChainClient
    from hashgrid.chain.contracts import Contracts

    loaded = _deployment(deployment)
    chain = ChainClient(rpc or Settings().rpc_url, tx_timeout=Settings().tx_timeout_seconds)
    if chain.chain_id != loaded.chain_id:
        raise InvalidInput(f"the RPC serves chain {chain.chain_id} but the deployment is for chain "
                           f"{loaded.chain_id}")
    return Contracts.load(chain, loaded)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


# ---------------------------------------------------------------- task


def _show_status(task_id: int, last: dict[str, Any] | None = None) -> Any:
    """The --wait progress line: each status, and why the task is not placed yet, on stderr; `last` keeps
    the latest status seen (for the Ctrl-C message)."""

    shown: list[str] = []

    def show(task: dict[str, Any]) -> None:
        if last is not None:
            last["status"] = task["status"]
        reason = f" (not placed: {task['unplaced_reason']})" if task.get("unplaced_reason") else ""
        line = f"task {task_id}: {task['status']}{reason}"
        if shown[-1:] != [line]:  # the posted line printed at submit is not repeated by the first poll
            shown.append(line)
            typer.echo(line, err=True)

    return show


def _follow(client: Any, task_id: int, *, timeout: float, place_timeout: float, as_json: bool,
            submitted: bool) -> None:
    """Follow a task to its end (the shared part of `submit --wait` and `task wait`); print its result hash,
    or fail with why. Ctrl-C leaves the task as it is and says how to resume or cancel."""
    last: dict[str, Any] = {}
    show = _show_status(task_id, last)
    if submitted:
        show({"status": "posted"})  # its receipt is in: shown even if it settles before the first poll
    try:
        task = client.wait(task_id, timeout=timeout, on_status=show, place_timeout=place_timeout or None)
    except KeyboardInterrupt:
        state = last.get("status", "not indexed yet")
        raise interrupted(f"task {task_id} goes on ({state}; its escrow stays locked until it ends): "
                          f"`hashgrid task wait {task_id}` follows it again, `hashgrid task cancel "
                          f"{task_id}` refunds it while it is not placed") from None
    if as_json:
        _print_json({"task_id": task_id, "status": task["status"], "result_hash": task.get("result_hash"),
                     "unplaced_reason": task.get("unplaced_reason")} if submitted else task)
    if task["status"] != "settled":
        raise HashgridError(f"task {task_id} ended {task['status']} without a result"
                            + (f" ({task['unplaced_reason']})" if task.get("unplaced_reason") else "")
                            + ("; its escrow is refunded: `hashgrid wallet claim`"
                               if task["status"] in ("failed", "cancelled", "expired") else ""))
    if not as_json:
        typer.echo(task["result_hash"])


PlaceTimeoutOpt = Annotated[float, typer.Option(
    "--place-timeout", min=0, help="fail after this many seconds still posted with a reason other than busy "
                                   "providers (nothing can place it as things stand); 0 waits through it")]


@task_app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="task spec, YAML or JSON (examples/*.yaml; `hashgrid task "
                                              "init` writes one)")],
    inputs: Annotated[Path | None, typer.Option("--inputs", help="directory holding the module and input "
                                                "files (default: next to the spec)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the task to the end, showing each state, and "
                                       "print its result hash")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds --wait waits", min=1)] = 600.0,
    place_timeout: PlaceTimeoutOpt = 60.0,
    approve: Annotated[bool, typer.Option("--approve", help="approve then post instead of an EIP-2612 "
                                          "permit")] = False,
    as_json: JsonOpt = False,
    marketplace: MarketOpt = None, rpc: RpcOpt = None, deployment: DeploymentOpt = None,
    keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None,
) -> None:
    """Hash and upload the inputs, register the spec, lock the escrow and post the task; print its id.

    Inputs may be given by `path` alone: their sha256 and size come from the local files (in --inputs or
    next to the spec), and a wasm `module` may be a file path."""
    with cli_errors():
        if not spec.is_file():
            raise InvalidInput(f"no spec file at {spec}")
        client = make_client(marketplace, rpc, deployment, keystore, key_env)
        with client:
            task_id = client.submit(spec, inputs_dir=inputs, permit=not approve)
            if not wait:
                if as_json:
                    _print_json({"task_id": task_id, "status": "posted"})
                else:
                    typer.echo(task_id)
                    typer.echo(f"follow it: hashgrid task wait {task_id}", err=True)
                return
            if not as_json:
                typer.echo(task_id)
            _follow(client, task_id, timeout=timeout, place_timeout=place_timeout, as_json=as_json,
                    submitted=True)


@task_app.command()
def wait(task_id: TaskIdArg,
         timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait", min=1)] = 600.0,
         place_timeout: PlaceTimeoutOpt = 60.0, as_json: JsonOpt = False,
         marketplace: MarketOpt = None, rpc: RpcOpt = None, deployment: DeploymentOpt = None,
         keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None) -> None:
    """Follow a task (again) to its end, showing each state; print its result hash."""
    with cli_errors(), make_client(marketplace, rpc, deployment, keystore, key_env) as client:
        _follow(client, task_id, timeout=timeout, place_timeout=place_timeout, as_json=as_json,
                submitted=False)


@task_app.command("list")
def list_(as_json: JsonOpt = False,
          limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="newest N tasks")] = 50,
          marketplace: MarketOpt = None, rpc: RpcOpt = None, deployment: DeploymentOpt = None,
          keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None) -> None:
    """Your tasks, newest first: id, status, escrow, result hash or why it is not placed."""
    with cli_errors(), make_client(marketplace, rpc, deployment, keystore, key_env) as client:
        page = client.tasks(limit=limit)
        rows = sorted(page["data"], key=lambda t: int(t["task_id"]), reverse=True)
        if as_json:
            _print_json({"data": rows, "count": page["count"]})
            return
        if not rows:
            typer.echo("no tasks yet (hashgrid task submit SPEC)")
            return
        for task in rows:
            detail = task.get("result_hash") or (f"not placed: {task['unplaced_reason']}"
                                                 if task.get("unplaced_reason") else "")
            escrow = grid(int(task["escrowed"]))
            typer.echo(f"{task['task_id']:>6}  {task['status']:<9}  escrow {escrow:<14}  {detail}")
        if int(page["count"]) > len(rows):
            typer.echo(f"({len(rows)} of {page['count']}; --limit N shows more)", err=True)


_STARTER = """\
# A Hashgrid task spec, written by `hashgrid task init` (schema: examples/spec.schema.json, fields:
# docs/task-spec.md). Inputs are named by path alone: `hashgrid task submit` hashes the local files
# (next to this spec, or in --inputs DIR) and uploads them; a wasm module may be a file path too.
version: 1
name: {name}
runtime: {runtime}
{program}
inputs:
  - path: data.txt                 # laid out at /in/data.txt; add `file: other/name` to read another file
outputs:
{outputs}
include_stdout: {include_stdout}   # true: stdout counts for the result hash; `task result --out` saves it
resources:
  cpus: 1
  memory_mb: 64
  disk_mb: 16
  timeout_s: 30
replicas: 3                        # k providers run it; q equal result hashes accept it
quorum: 2
max_price_per_replica: "10000000000000000"   # wei of GRID (0.01 GRID); `task estimate` shows the range
deadline_s: 3600                   # beyond the escrow's commit + reveal windows (20 min on the dev chain)
"""
_WASM = """\
module: wordfreq.wasm              # a file path (hashed at submit) or the module's sha256
command: ["wordfreq.wasm", "/in/data.txt"]"""
_DOCKER = """\
image: "{image}"   # a local image id: docker images --no-trunc
command:
  - sh
  - -c
  - wc /in/data.txt; tr -cs 'A-Za-z' '\\n' < /in/data.txt | sort | uniq -c | sort -rn > /out/counts.txt"""
_SAMPLE_TEXT = "the quick brown fox jumps over the lazy dog\nthe dog sleeps\n"


@task_app.command()
def init(path: Annotated[Path, typer.Argument(help="spec file to write")] = Path("task.yaml"),
         runtime: Annotated[str, typer.Option("--runtime", help="wasm or docker")] = "wasm",
         force: Annotated[bool, typer.Option("--force", help="overwrite an existing spec")] = False) -> None:
    """Write a starter spec (and a sample input and module next to it) that `task submit` runs as is."""
    import shutil

    from hashgrid.config import REPO_ROOT

    with cli_errors():
        if runtime not in ("wasm", "docker"):
            raise InvalidInput(f"--runtime must be wasm or docker, not {runtime!r}")
        if path.exists() and not force:
            raise InvalidInput(f"{path} already exists (--force overwrites it)")
        folder = path.resolve().parent
        folder.mkdir(parents=True, exist_ok=True)
        wrote = [path]
        if runtime == "wasm":
            module = REPO_ROOT / "examples" / "wasm" / "wordfreq.wasm"
            if not module.is_file():
                raise InvalidInput(f"the sample module {module} is not built (run `make setup`)")
            if not (folder / module.name).exists():
                shutil.copyfile(module, folder / module.name)
                wrote.append(folder / module.name)
            program, outputs, include_stdout = _WASM, "  - result.txt", "false"
        else:
            images_file = REPO_ROOT / "build" / "images.json"
            images = json.loads(images_file.read_text()) if images_file.is_file() else {}
            image = images.get("hashgrid/busybox:1", "sha256:<64 hex: your image id>")
            program, outputs, include_stdout = _DOCKER.format(image=image), "  - counts.txt", "true"
        if not (folder / "data.txt").exists():
            (folder / "data.txt").write_text(_SAMPLE_TEXT)
            wrote.append(folder / "data.txt")
        path.write_text(_STARTER.format(name=f"my {runtime} task", runtime=runtime, program=program,
                                        outputs=outputs, include_stdout=include_stdout))
        for item in wrote:
            typer.echo(f"wrote {item}")
        typer.echo(f"next: hashgrid task estimate {path} && hashgrid task submit {path} --wait", err=True)


@task_app.command()
def status(task_id: TaskIdArg, as_json: JsonOpt = False, marketplace: MarketOpt = None, rpc: RpcOpt = None,
           deployment: DeploymentOpt = None, keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None) -> None:
    """A task's status, replicas and result hash."""
    with cli_errors(), make_client(marketplace, rpc, deployment, keystore, key_env) as client:
        task = client.status(task_id)
        if as_json:
            _print_json(task)
            return
        typer.echo(f"task {task_id}: {task['status']}")
        if task.get("unplaced_reason"):
            typer.echo(f"  not placed: {task['unplaced_reason']}")
        for replica in task.get("replica_list", []):
            detail = f" ({replica['detail']})" if replica.get("detail") else ""
            typer.echo(f"  {replica['provider']}  round {replica['round']}  {replica['status']}{detail}")
        if task.get("result_hash"):
            typer.echo(f"  result {task['result_hash']}")


@task_app.command()
def logs(task_id: TaskIdArg,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until the task ends")] = False,
         marketplace: MarketOpt = None, rpc: RpcOpt = None, deployment: DeploymentOpt = None,
         keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None) -> None:
    """A task's logs, prefixed by the provider that wrote them."""
    with cli_errors(), make_client(marketplace, rpc, deployment, keystore, key_env) as client:
        for line in client.logs(task_id, follow=follow):
            typer.echo(line)


@task_app.command()
def result(task_id: TaskIdArg,
           out: Annotated[Path | None, typer.Option("--out", help="download the outputs into this "
                                                    "directory")] = None,
           as_json: JsonOpt = False, marketplace: MarketOpt = None, rpc: RpcOpt = None,
           deployment: DeploymentOpt = None, keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None) -> None:
    """The verified result hash and output files of a settled task."""
    with cli_errors(), make_client(marketplace, rpc, deployment, keystore, key_env) as client:
        found = client.result(task_id)
        if as_json:
            _print_json(found)
        else:
            typer.echo(f"result {found['result_hash']}")
            typer.echo(f"  agreed by {', '.join(found['agreeing'])}")
            for item in found["outputs"]:
                typer.echo(f"  {item['path']}  {item['sha256']}  {item.get('size', '?')} bytes")
            if not found["outputs"]:
                typer.echo("  no output files")
        if out is not None:
            for path in client.download(task_id, out):
                typer.echo(f"wrote {path}", err=True)


@task_app.command()
def invoice(task_id: TaskIdArg, as_json: JsonOpt = False, marketplace: MarketOpt = None,
            rpc: RpcOpt = None, deployment: DeploymentOpt = None, keystore: KeystoreOpt = None,
            key_env: KeyEnvOpt = None) -> None:
    """What a finished task cost, from its chain events: paid per provider, fee, refund."""
    with cli_errors(), make_client(marketplace, rpc, deployment, keystore, key_env) as client:
        bill = client.invoice(task_id)
        if as_json:
            _print_json(bill.to_dict())
            return
        typer.echo(f"task {task_id}: {bill.state}")
        typer.echo(f"  escrowed {grid(bill.escrowed)}")
        for line in bill.lines:
            typer.echo(f"  {line.provider}  {line.outcome:<10} {grid(line.payment)}")
        typer.echo(f"  paid     {grid(bill.paid)}")
        typer.echo(f"  fee      {grid(bill.fee)}")
        typer.echo(f"  refund   {grid(bill.refund)}  (withdraw refunds with: hashgrid wallet claim)")


@task_app.command()
def cancel(task_id: TaskIdArg, as_json: JsonOpt = False, marketplace: MarketOpt = None, rpc: RpcOpt = None,
           deployment: DeploymentOpt = None, keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None) -> None:
    """Cancel a task not placed yet; its escrow becomes claimable (`hashgrid wallet claim`)."""
    with cli_errors(), make_client(marketplace, rpc, deployment, keystore, key_env) as client:
        refunded = client.cancel(task_id)
        if as_json:
            _print_json({"task_id": task_id, "status": "cancelled", "refunded": str(refunded)})
            return
        typer.echo(f"task {task_id} cancelled; {grid(refunded)} refunded (withdraw: hashgrid wallet claim)")


@task_app.command()
def estimate(spec: Annotated[Path, typer.Argument(help="task spec, YAML or JSON")], as_json: JsonOpt = False,
             marketplace: MarketOpt = None, rpc: RpcOpt = None, deployment: DeploymentOpt = None,
             keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None) -> None:
    """The price range before paying, from the online providers' prices, and the escrow locked."""
    with cli_errors():
        if not spec.is_file():
            raise InvalidInput(f"no spec file at {spec}")
        from hashgrid.client import load_local_spec

        parsed = load_local_spec(spec)
        with make_client(marketplace, rpc, deployment, keystore, key_env) as client:
            found = client.estimate(parsed)
        if as_json:
            _print_json(found.to_dict())
            return
        typer.echo(f"{parsed.name}: {grid(found.low)} .. {grid(found.high)} "
                   f"({found.providers} provider(s) online for {parsed.runtime}, "
                   f"fee {found.fee_bps / 100:g}%)")
        typer.echo(f"  per replica {grid(found.per_replica_low)} .. {grid(found.per_replica_high)}")
        typer.echo(f"  escrow locked {grid(found.escrow)} (the unspent part is refunded)")
        for note in found.notes:
            typer.echo(f"  note: {note}")


# ---------------------------------------------------------------- wallet


NameOpt = Annotated[str, typer.Option("--name", help="wallet name under <state_dir>/wallets")]


def _wallet_path(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise InvalidInput(f"bad wallet name {name!r}")
    return wallets_dir() / f"{name}.json"


@wallet_app.command("new")
def wallet_new(name: NameOpt = "default") -> None:
    """Make a new key in an encrypted keystore (password from HASHGRID_KEYSTORE_PASSWORD or a prompt)."""
    from hashgrid.keystore import create_keystore

    with cli_errors():
        path = _wallet_path(name)
        address = create_keystore(path, _password(confirm=True))
        typer.echo(checksum_address(address))
        typer.echo(f"keystore {path}", err=True)


@wallet_app.command("import")
def wallet_import(name: NameOpt = "default", key_env: KeyEnvOpt = None) -> None:
    """Encrypt an existing private key (from --key-env VAR or a prompt) into a keystore."""
    from hashgrid.keystore import import_keystore

    with cli_errors():
        path = _wallet_path(name)
        if key_env is not None:
            key = os.environ.get(key_env, "")
            if not key:
                raise InvalidInput(f"environment variable {key_env} is not set")
        elif sys.stdin.isatty():
            key = typer.prompt("private key", hide_input=True)
        else:
            raise InvalidInput("pass --key-env VAR (no terminal to prompt for the key)")
        address = import_keystore(path, key, _password(confirm=True))
        typer.echo(checksum_address(address))
        typer.echo(f"keystore {path}", err=True)


@wallet_app.command("balance")
def wallet_balance(address: Annotated[str | None, typer.Argument(help="address (default: the signing "
                                                                 "key's)")] = None,
                   as_json: JsonOpt = False, rpc: RpcOpt = None, deployment: DeploymentOpt = None,
                   keystore: KeystoreOpt = None, key_env: KeyEnvOpt = None) -> None:
    """GRID, ETH and the escrow credits claimable (refunds, payments)."""
    with cli_errors():
        who = resolve_address(address, keystore, key_env)
        contracts = _contracts(rpc, deployment)
        grid_balance = contracts.token.balance_of(who)
        eth = int(contracts.client._guarded(lambda: contracts.client.w3.eth.get_balance(who)))
        claimable = contracts.escrow.claimable(who)
        if as_json:
            _print_json({"address": who, "grid": str(grid_balance), "eth": str(eth),
                         "claimable": str(claimable)})
            return
        typer.echo(who)
        typer.echo(f"  GRID       {grid(grid_balance)}")
        typer.echo(f"  ETH        {grid(eth, 'ETH')}")
        typer.echo(f"  claimable  {grid(claimable)}")


@wallet_app.command("claim")
def wallet_claim(as_json: JsonOpt = False, marketplace: MarketOpt = None, rpc: RpcOpt = None,
                 deployment: DeploymentOpt = None, keystore: KeystoreOpt = None,
                 key_env: KeyEnvOpt = None) -> None:
    """Withdraw your escrow credits (refunds of settled, failed and cancelled tasks) to your wallet."""
    with cli_errors(), make_client(marketplace, rpc, deployment, keystore, key_env) as client:
        claimed = client.claim()
        balance = client.contracts.token.balance_of(client.address)
        if as_json:
            _print_json({"address": client.address, "claimed": str(claimed), "grid": str(balance)})
            return
        if claimed == 0:
            typer.echo(f"nothing to claim; GRID {grid(balance)}")
            return
        typer.echo(f"claimed {grid(claimed)}; GRID now {grid(balance)}")


# ---------------------------------------------------------------- faucet


def faucet(
    address: Annotated[str | None, typer.Argument(help="who receives (default: the signing key's "
                                                  "address)")] = None,
    amount: Annotated[float, typer.Option("--amount", help="GRID to send", min=0)] = 1000.0,
    eth: Annotated[float, typer.Option("--eth", help="ETH to send for gas", min=0)] = 10.0,
    as_json: JsonOpt = False, rpc: RpcOpt = None, deployment: DeploymentOpt = None,
    keystore: KeystoreOpt = None,
    key_env: KeyEnvOpt = None,
) -> None:
    """Dev chain only: send GRID and ETH from the dev deployer (anvil's publicly known key 0)."""
    with cli_errors():
        who = resolve_address(address, keystore, key_env)
        contracts = _contracts(rpc, deployment)
        chain_id = contracts.client.chain_id
        if chain_id != DEV_CHAIN_ID:
            raise InvalidInput(f"the faucet runs on the dev chain ({DEV_CHAIN_ID}) only, not chain "
                               f"{chain_id}")
        from eth_account import Account

        deployer = Account.from_key(ANVIL_DEV_KEYS[0])  # DEV-ONLY key, dev chain checked above
        grid_wei, eth_wei = int(amount * GRID), int(eth * GRID)
        if grid_wei:
            contracts.token.transfer(who, grid_wei, sender=deployer)
        if eth_wei:
            contracts.client.send_transaction({"to": who, "value": eth_wei}, sender=deployer)
        if as_json:
            _print_json({"address": who, "grid": str(grid_wei), "eth": str(eth_wei)})
            return
        typer.echo(f"sent {grid(grid_wei)} and {grid(eth_wei, 'ETH')} to {who}")
