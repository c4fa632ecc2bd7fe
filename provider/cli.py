"""`hashgrid provider ...`: set up a provider, show what the device offers, and run specs locally.

`exec` runs a spec with no chain and no marketplace so a customer can check that it is deterministic before
paying for it. Exit codes are hashgrid.exits' table, as for every command; for `exec`: 0 ok, 1 the task
failed (non-zero exit or killed), 2 it could not run as given (invalid spec, policy, missing input or image),
3 repeated runs disagree.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hashgrid.canonical import sha256_file, to_hex32
from hashgrid.content import ContentStore
from hashgrid.errors import ContentMissing, HashgridError, InvalidInput
from hashgrid.exits import ExitCode, error_line, exit_code_for
from hashgrid.spec import TaskSpec, load_local_spec
from provider.config import (
    GRID,
    KeyConfig,
    Offer,
    Prices,
    ProviderConfig,
    default_config_path,
    load_config,
    write_config,
)
from provider.policy import Policy

app = typer.Typer(help="Sell this device's compute: set up, check specs locally, stake, see and claim "
                       "earnings.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
log = logging.getLogger(__name__)

EXIT_TASK_FAILED, EXIT_CANNOT_RUN, EXIT_DISAGREE = ExitCode.FAILED, ExitCode.BAD_INPUT, ExitCode.DISAGREE
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="provider config file "
                                                                            "(default: "
                                                                            "<state_dir>/provider/provider.toml)")]


def _log_handler() -> logging.Handler:
    """Rich, coloured lines on a terminal; plain full-width lines (one record a line, with the date) when
    stderr is a file or pipe, so hashes and transaction ids are never wrapped across lines."""
    if errors.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=errors, show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
        return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def _fail(exc: HashgridError, code: int | None = None) -> typer.Exit:
    """One line on stderr (a revert in words), and the exit code of hashgrid.exits' table."""
    from rich.markup import escape

    errors.print(f"[red]error[/red] ({exc.code}): {escape(error_line(exc))}", highlight=False)
    return typer.Exit(int(exit_code_for(exc)) if code is None else code)


# ------------------------------------------------------------------------------------------------ info


@app.command()
def info(json_output: Annotated[bool, typer.Option("--json", help="print the JSON document only")] = False,
         config_path: ConfigOption = None) -> None:
    """What this device offers and which runtimes work here (the document the daemon advertises)."""
    from provider.detect import capabilities_hash, detect
    from provider.gpu import describe

    try:
        config = load_config(config_path)
    except HashgridError as exc:
        raise _fail(exc) from None
    document = detect(config.workdir)
    if json_output:
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
        return
    cpu, mem, storage, system = document["cpu"], document["mem"], document["storage"], document["os"]
    table = Table(title="This device", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("cpu", f"{cpu['model']} ({cpu['arch']}), {cpu['cores']} cores, {cpu['threads']} threads")
    table.add_row("memory", f"{mem['total_mb']} MB total, {mem['available_mb']} MB available")
    table.add_row("storage", f"{storage['free_mb']} MB free of {storage['total_mb']} MB at {storage['path']}")
    table.add_row("os", f"{system['name']} {system['version']}, kernel {system['kernel']}")
    gpus = document["gpus"]
    table.add_row("gpus", ", ".join(f"{g['model']} ({g.get('memory_mb')} MB, CUDA {g.get('cuda_major')}, "
                                    f"attached via {g.get('attach')})" for g in gpus) or "none offered")
    for withheld in document.get("gpus_withheld") or []:
        table.add_row("gpu not offered", f"[yellow]{describe(withheld)}[/yellow]: {withheld.get('reason')}")
    if gpus:
        table.add_row("gpu backends", ", ".join(document.get("gpu_runtimes") or []))
    table.add_row("runtimes", ", ".join(document["runtimes"]) or "[red]none working[/red]")
    stable = detect(config.workdir, volatile=False)
    table.add_row("capabilities hash", to_hex32(capabilities_hash(stable)))
    console.print(table)


@app.command("check-gpu")
def check_gpu(
    spec: Annotated[Path | None, typer.Option(help="GPU task to run in the sandbox (default: "
                                                   "examples/gpu.yaml)")] = None,
    runs: Annotated[int, typer.Option(min=1, max=10, help="sandbox runs to compare")] = 2,
    host: Annotated[bool, typer.Option("--host", help="also run the training step outside the sandbox "
                                                      "(twice on the GPU, once on the CPU)")] = False,
    python: Annotated[str, typer.Option(help="python with PyTorch for --host")] = sys.executable,
) -> None:
    """After installing: detect GPUs, attach one in the sandbox, run the GPU example twice, compare hashes."""
    from provider.gpucheck import EXAMPLE_SPEC, run_check

    report = run_check(spec_path=spec or EXAMPLE_SPEC, runs=runs, host_python=python if host else None)
    table = Table(title="GPU check", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("step", style="bold", no_wrap=True)
    table.add_column("result", overflow="fold")
    marks = {True: "[green]ok[/green]", False: "[red]FAIL[/red]", None: ""}
    for row in report.rows:
        table.add_row(marks[row.ok], row.step, row.detail)
    console.print(table)
    if not report.passed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------ exec


def _local_policy(spec: TaskSpec) -> Policy:
    """Without a provider config, `exec` runs the caller's own spec: any local image or module, no network."""
    resources = spec.resources
    return Policy(allow_any_image=True, allow_any_module=True, allow_network=False,
                  max_cpus=resources.cpus, max_memory_mb=resources.memory_mb, max_disk_mb=resources.disk_mb,
                  max_timeout_s=resources.timeout_s, max_pids=resources.pids, max_gpus=resources.gpus)


SEARCH_MAX_FILES = 5000


def _walk(directory: Path) -> list[Path]:
    """Regular files under a directory (hidden dirs skipped, bounded), for finding blobs by content."""
    found: list[Path] = []
    for path in sorted(directory.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        if path.is_file() and not path.is_symlink():
            found.append(path)
            if len(found) >= SEARCH_MAX_FILES:
                break
    return found


def _import_blob(store: ContentStore, digest: str, *, what: str, name: str | None, search: list[Path],
                 size: int | None = None, suffix: str | None = None) -> None:
    """Put a blob into the store from local dirs: a file named by its sha256 or by its spec path (whose
    bytes must then match, else DigestMismatch), else any file there with that size (or suffix) and sha256."""
    if store.has(digest):
        return
    for directory in search:
        named = [directory / digest, *([directory / name] if name else [])]
        for path in named:
            if path.is_file():
                store.put_file(path, expected=digest, what=f"{what} from {path}")
                return
    for directory in search:
        for path in _walk(directory):
            if size is not None and path.stat().st_size != size:
                continue
            if suffix is not None and path.suffix != suffix:
                continue
            if sha256_file(path)[0] == digest:
                store.put_file(path, expected=digest, what=f"{what} from {path}")
                return
    places = ", ".join(str(d) for d in search) or "(no directories)"
    raise ContentMissing(f"{what} (sha256 {digest}) is not in the content store nor under {places}",
                         sha256=digest)


def import_spec_content(spec: TaskSpec, store: ContentStore, search: list[Path]) -> None:
    """Load a spec's inputs (and wasm module) into the store from local directories."""
    for blob in spec.inputs:
        _import_blob(store, blob.sha256, what=f"input {blob.path!r}", name=blob.path, search=search,
                     size=blob.size)
    if spec.runtime == "wasm":
        assert spec.module is not None
        _import_blob(store, spec.module, what="wasm module", name=None, search=search, suffix=".wasm")


def _print_execution(index: int, summary: dict[str, Any], logs: bytes, *, show_logs: bool) -> None:
    usage = summary["usage"]
    killed = f", killed: {summary['killed']}" if summary["killed"] else ""
    status = "[green]ok[/green]" if summary["exit_code"] == 0 and not killed else (
        f"[red]exit {summary['exit_code']}{killed}[/red]")
    console.print(f"[bold]run {index}[/bold] on {summary['runtime']}: {status}  result hash "
                  f"[cyan]{summary['result_hash']}[/cyan]", highlight=False)
    console.print(f"  usage: wall {usage['wall_seconds']} s, cpu {usage['cpu_seconds']} s, peak "
                  f"{usage['peak_memory_mb']} MB, memory {usage['memory_gb_seconds']} GB-s, gpu "
                  f"{usage['gpu_seconds']} s", highlight=False)
    if usage.get("gpu_seconds"):
        console.print(f"  gpu: {usage.get('gpu_utilization_pct')}% busy, "
                      f"{usage.get('gpu_memory_peak_mb')} MB peak (NVML)", highlight=False)
    for entry in summary["result"]["outputs"]:
        detail = "absent" if entry.get("absent") else f"{entry['size']} bytes, sha256 {entry['sha256']}"
        console.print(f"  /out/{entry['path']}: {detail}", highlight=False, markup=False)
    if show_logs and logs:
        text = logs.decode("utf-8", errors="replace")
        if len(text) > 4000:
            text = text[:4000] + f"\n... ({len(logs)} bytes in all)"
        console.print("  logs:", highlight=False)
        console.print("    " + text.rstrip("\n").replace("\n", "\n    "), markup=False, highlight=False)


@app.command("exec")
def exec_(spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="task spec (.yaml or .json)")],
          repeat: Annotated[int, typer.Option("--repeat", "-n", min=1, max=100,
                                              help="run N times and check that the hashes agree")] = 1,
          input_dir: Annotated[Path | None, typer.Option("--input-dir", "-i", help="where inputs are "
                                                         "(named by sha256 or by their spec path)")] = None,
          json_output: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
          config_path: ConfigOption = None) -> None:
    """Run a task spec locally (no chain, no marketplace) and print its result hash, usage and logs."""
    from provider.executor import execute

    try:
        spec = load_local_spec(spec_path, input_dir)  # inputs by path alone are hashed from local files
        path = config_path or default_config_path()
        config = load_config(path)
        policy = config.policy if path.exists() else _local_policy(spec)
        store = ContentStore(config.content_dir)
        search = [d for d in (input_dir, spec_path.resolve().parent) if d is not None]
        import_spec_content(spec, store, search)
    except HashgridError as exc:
        raise _fail(exc) from None
    summaries: list[dict[str, Any]] = []
    for index in range(1, repeat + 1):
        try:
            execution = execute(spec, store=store, policy=policy, workdir=config.workdir)
        except HashgridError as exc:
            if json_output:
                typer.echo(json.dumps({"error": exc.to_dict(), "runs": summaries}, indent=2, default=str))
            raise _fail(exc) from None
        summary = execution.summary()
        summary["logs"] = execution.logs.decode("utf-8", errors="replace")
        summaries.append(summary)
        if not json_output:
            _print_execution(index, summary, execution.logs, show_logs=index == 1 or repeat == 1)
    hashes = {summary["result_hash"] for summary in summaries}
    agree = len(hashes) == 1
    failed = [s for s in summaries if s["exit_code"] != 0 or s["killed"]]
    if json_output:
        report = {"spec": str(spec_path), "spec_hash": summaries[0]["spec_hash"], "runs": summaries,
                  "agree": agree, "result_hash": summaries[0]["result_hash"] if agree else None}
        typer.echo(json.dumps(report, indent=2, default=str))
    elif repeat > 1 and agree:
        agreed = summaries[0]["result_hash"]
        console.print(f"[green]all {repeat} runs agree[/green] on {agreed}", highlight=False)
    if not agree:
        errors.print(f"[red]error[/red]: the {repeat} runs disagree: {len(hashes)} distinct result hashes "
                     f"({', '.join(sorted(hashes))}); the spec is not deterministic", highlight=False)
        raise typer.Exit(EXIT_DISAGREE)
    if failed:
        first = failed[0]
        reason = f"killed ({first['killed']})" if first["killed"] else f"exit code {first['exit_code']}"
        errors.print(f"[red]error[/red]: the task failed: {reason}", highlight=False)
        raise typer.Exit(EXIT_TASK_FAILED)


# ------------------------------------------------------------------------------------------------ init


def _wei(value: str) -> int:
    """Parse '0.001GRID', '1e15' or a plain integer of wei."""
    text = value.strip().lower().replace("_", "")
    if text.endswith("grid"):
        from decimal import Decimal

        return int(Decimal(text.removesuffix("grid").strip()) * GRID)
    if "e" in text:
        from decimal import Decimal

        return int(Decimal(text))
    return int(text)


def _bundled_images() -> list[str]:
    """The sample images `make setup` built on this machine (build/images.json): a fresh provider runs the
    bundled examples out of the box; any other image must be allowed by id or by a trusted signer."""
    path = Path(__file__).resolve().parent.parent / "build" / "images.json"
    try:
        return sorted(set(json.loads(path.read_text()).values()))
    except (OSError, ValueError):
        return []


@app.command()
def init(
    config_path: ConfigOption = None,
    keystore: Annotated[Path | None, typer.Option(help="keystore to write (default: by the config)")] = None,
    import_key_env: Annotated[str | None, typer.Option(
        "--import-key-env", help="import the raw key in this environment variable into the keystore")] = None,
    env_key: Annotated[bool, typer.Option(
        "--env-key", help="no keystore: the daemon reads HASHGRID_PROVIDER_KEY (automation)")] = False,
    cores: Annotated[int | None, typer.Option(help="cores to offer (default: all)")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="memory to offer, MB (default: 3/4 of total)")] = None,
    disk_mb: Annotated[int | None, typer.Option(help="disk to offer in MB (default: half of free)")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs to offer (default: all detected)")] = None,
    price_fixed: Annotated[str | None, typer.Option(help="per task, wei or e.g. 0.001GRID")] = None,
    price_cpu_second: Annotated[str | None, typer.Option(help="per CPU-second")] = None,
    price_gb_second: Annotated[str | None, typer.Option(help="per GB-second of memory")] = None,
    price_gpu_second: Annotated[str | None, typer.Option(help="per GPU-second")] = None,
    allow_image: Annotated[list[str] | None, typer.Option(help="allow this image id (repeatable)")] = None,
    trusted_signer: Annotated[list[str] | None, typer.Option(help="trust what it signs (repeatable)")] = None,
    docker_runtime: Annotated[str, typer.Option(help="auto | runsc | docker")] = "auto",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="non-interactive: defaults, no questions")] = False,
    force: Annotated[bool, typer.Option(help="overwrite an existing config")] = False,
) -> None:
    """Create or import a key, choose the offer and prices, and write a commented config file."""
    from eth_account import Account

    from hashgrid.keystore import PASSWORD_ENV, create_keystore, import_keystore, load_keystore
    from provider.detect import detect

    path = config_path or default_config_path()
    if path.exists() and not force:
        raise _fail(InvalidInput(f"{path} already exists (use --force to overwrite)"))
    device = detect(path.parent)

    def ask(label: str, given: Any, default: Any, cast: type = int) -> Any:
        if given is not None:
            return given
        return default if yes else typer.prompt(label, default=default, type=cast)

    reused = False
    try:
        key = KeyConfig()
        if not env_key:
            keystore = keystore or path.with_name("provider-key.json")
            password = os.environ.get(PASSWORD_ENV)
            if password is None:
                if yes:
                    raise InvalidInput(f"--yes needs the keystore password in {PASSWORD_ENV} (or use "
                                        "--env-key)")
                password = typer.prompt("keystore password", hide_input=True, confirmation_prompt=True)
            if keystore.exists():
                # an earlier init that stopped before writing the config left it: reuse it, never overwrite a
                # key (it may already hold stake), and check the password now rather than at `provider run`
                address = Account.from_key(load_keystore(keystore, password)).address
                wanted = os.environ.get(import_key_env or "", "").strip()
                if wanted and Account.from_key(wanted).address != address:
                    raise InvalidInput(f"{keystore} already holds the key of {address}; move it away to "
                                        "import another (a keystore is never overwritten)")
                reused = True
            elif import_key_env:
                raw = os.environ.get(import_key_env)
                if not raw:
                    raise InvalidInput(f"environment variable {import_key_env} is empty or unset")
                address = import_keystore(keystore, raw, password)
            else:
                address = create_keystore(keystore, password)
            key = KeyConfig(keystore=keystore.resolve(), address=address)
        offer = Offer(
            cores=ask("cores to offer", cores, device["cpu"]["cores"]),
            memory_mb=ask("memory to offer (MB)", memory_mb, max(64, device["mem"]["total_mb"] * 3 // 4)),
            disk_mb=ask("disk to offer (MB)", disk_mb, max(64, device["storage"]["free_mb"] // 2)),
            gpus=ask("GPUs to offer", gpus, len(device["gpus"])),
        )
        base = Prices()
        prices = Prices(
            fixed=_wei(ask("price per task (wei or NGRID)", price_fixed, str(base.fixed), str)),
            per_cpu_second=_wei(ask("price per CPU-second", price_cpu_second, str(base.per_cpu_second), str)),
            per_gb_second=_wei(ask("price per GB-second", price_gb_second, str(base.per_gb_second), str)),
            per_gpu_second=_wei(ask("price per GPU-second", price_gpu_second, str(base.per_gpu_second), str)),
        )
        runtimes = [name for name in ("docker", "wasm")
                    if (name == "wasm" and "wasm" in device["runtimes"])
                    or (name == "docker" and {"docker", "runsc"} & set(device["runtimes"]))]
        images = allow_image if allow_image is not None else _bundled_images()
        policy = Policy(runtimes=runtimes or ["docker", "wasm"], docker_runtime=docker_runtime,  # type: ignore[arg-type]
                        allowed_images=images, trusted_signers=trusted_signer or [],
                        max_cpus=float(offer.cores), max_memory_mb=offer.memory_mb, max_disk_mb=offer.disk_mb,
                        max_gpus=offer.gpus)
        config = ProviderConfig(key=key, offer=offer, prices=prices, policy=policy)
        write_config(config, path)
    except HashgridError as exc:
        raise _fail(exc) from None
    except ValueError as exc:
        raise _fail(InvalidInput(str(exc))) from None
    console.print(f"wrote [bold]{path}[/bold]", highlight=False)
    if key.address:
        console.print(f"provider [cyan]{key.address}[/cyan], keystore {key.keystore}"
                      + (" (reused: it was already there)" if reused else ""), highlight=False)
    if "docker" in policy.runtimes:
        allowed = ", ".join(policy.allowed_images) if policy.allowed_images else "none"
        console.print(f"docker images this provider runs: {allowed}"
                      + ("" if policy.trusted_signers else "; add more with --allow-image ID or edit "
                         f"policy.allowed_images in {path}"), highlight=False)
    else:
        console.print("the key comes from HASHGRID_PROVIDER_KEY when the daemon starts", highlight=False)


# ------------------------------------------------------------------------------------------------ chain

ZERO_ADDRESS = "0x" + "0" * 40
AddressOption = Annotated[str | None, typer.Option("--address", help="provider (default: the key's address)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON (amounts in wei as strings)")]


class _Chain:
    """The provider's view of the chain: bound contracts from the deployment file, and its key when needed."""

    def __init__(self, config_path: Path | None, *, need_key: bool, address: str | None = None) -> None:
        from hashgrid.chain.client import ChainClient
        from hashgrid.chain.contracts import Contracts
        from hashgrid.chain.deployment import Deployment
        from hashgrid.config import get_settings
        from hashgrid.keystore import PASSWORD_ENV, resolve_private_key

        settings = get_settings()
        self.config = load_config(config_path)
        client = ChainClient(settings.rpc_url, tx_timeout=settings.tx_timeout_seconds)
        self.contracts = Contracts.load(client, Deployment.load(settings.deployment_path))
        self.key: str | None = None
        if need_key or address is None:
            password = None
            if (need_key and self.config.key.keystore and not os.environ.get("HASHGRID_PROVIDER_KEY")
                    and PASSWORD_ENV not in os.environ):
                password = typer.prompt("keystore password", hide_input=True)
            if need_key or os.environ.get("HASHGRID_PROVIDER_KEY") or password is not None:
                self.key = resolve_private_key(self.config.key.keystore, password=password,
                                               chain_id=settings.chain_id)
        if address is None and self.key is None and self.config.key.address:
            address = self.config.key.address
        if address is None:
            from eth_account import Account

            if self.key is None:
                raise InvalidInput("no provider address: pass --address, set HASHGRID_PROVIDER_KEY or run "
                                    "init")
            address = Account.from_key(self.key).address
        self.address = address

    def signer(self) -> str:
        assert self.key is not None
        return self.key


def _grid(wei: int) -> str:
    return f"{wei / GRID:,.6f} GRID ({wei} wei)"


def _chain_errors(function: Any) -> Any:
    """Turn Hashgrid errors (reverts in words) into one line and the exit code of hashgrid.exits' table."""
    import functools

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except HashgridError as exc:
            raise _fail(exc) from None

    return wrapper


@app.command()
@_chain_errors
def stake(amount: Annotated[str, typer.Argument(help="amount: wei, or e.g. 100GRID")],
          config_path: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Stake GRID in the ProviderRegistry (registering this device's capabilities first if needed)."""
    from provider.detect import capabilities_hash, detect

    chain = _Chain(config_path, need_key=True)
    registry, token = chain.contracts.registry, chain.contracts.token
    if registry.operator_of(chain.address).lower() == ZERO_ADDRESS:
        document = detect(chain.config.workdir, volatile=False)
        uri = f"hashgrid://provider/{chain.address.lower()}"  # the daemon re-registers with its served URI
        registry.register(chain.address, capabilities_hash(document), uri, sender=chain.signer())
        if not json_output:
            console.print(f"registered {chain.address} (capabilities "
                          f"{to_hex32(capabilities_hash(document))})", highlight=False)
    wei = _wei(amount)
    token.approve(registry.address, wei, sender=chain.signer())
    registry.stake(wei, sender=chain.signer())
    now = registry.stake_of(chain.address)
    if json_output:
        typer.echo(json.dumps({"address": chain.address, "staked": str(wei), "stake": str(now),
                               "eligible": now >= registry.min_stake()}, indent=2))
        return
    console.print(f"staked {_grid(wei)}; stake now {_grid(now)}", highlight=False)


@app.command()
@_chain_errors
def unstake(amount: Annotated[str, typer.Argument(help="amount: wei, or e.g. 100GRID")],
            config_path: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Start unbonding stake; `withdraw` releases it after the unbonding delay."""
    chain = _Chain(config_path, need_key=True)
    registry = chain.contracts.registry
    registry.request_unstake(_wei(amount), sender=chain.signer())
    unbonding, release = registry.unbonding_of(chain.address)
    from hashgrid.chain.reverts import when

    now = chain.contracts.client.timestamp()
    left, minimum = registry.stake_of(chain.address), registry.min_stake()
    if json_output:
        typer.echo(json.dumps({"address": chain.address, "unbonding": str(unbonding), "release": release,
                               "stake": str(left), "eligible": left >= minimum}, indent=2))
    else:
        console.print(f"unbonding {_grid(unbonding)}, withdrawable from {when(release, now)} "
                      "(`hashgrid provider withdraw` then)", highlight=False)
    if left < minimum:
        errors.print(f"[yellow]warning[/yellow]: the stake left, {_grid(left)}, is below the minimum "
                     f"{_grid(minimum)}: this provider is no longer eligible and gets no new work until it "
                     "stakes again (`hashgrid provider stake AMOUNT`)", highlight=False)


@app.command()
@_chain_errors
def withdraw(config_path: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Withdraw stake whose unbonding delay has passed."""
    chain = _Chain(config_path, need_key=True)
    unbonding, _ = chain.contracts.registry.unbonding_of(chain.address)
    chain.contracts.registry.withdraw(sender=chain.signer())
    if json_output:
        typer.echo(json.dumps({"address": chain.address, "withdrew": str(unbonding)}, indent=2))
        return
    console.print(f"withdrew {_grid(unbonding)}", highlight=False)


def _outcomes(chain: _Chain) -> dict[str, int]:
    from hashgrid.chain.contracts import ReplicaState

    start = chain.contracts.deployment.start_block
    counts: dict[str, int] = {}
    for event in chain.contracts.escrow.events(start, names=["ReplicaFinalized"], provider=chain.address):
        name = ReplicaState(int(event.args["outcome"])).name.lower()
        counts[name] = counts.get(name, 0) + 1
    return counts


@app.command()
@_chain_errors
def status(address: AddressOption = None, json_output: Annotated[bool, typer.Option("--json")] = False,
           config_path: ConfigOption = None) -> None:
    """Stake, unbonding, running tasks (active assignments) and track record, from the chain."""
    chain = _Chain(config_path, need_key=False, address=address)
    registry = chain.contracts.registry
    unbonding, release = registry.unbonding_of(chain.address)
    capabilities, uri = registry.capabilities_of(chain.address)
    outcomes = _outcomes(chain)
    finalized = sum(outcomes.values())
    report: dict[str, Any] = {
        "address": chain.address, "operator": registry.operator_of(chain.address),
        "stake": registry.stake_of(chain.address), "min_stake": registry.min_stake(),
        "eligible": registry.is_eligible(chain.address), "unbonding": unbonding, "unbonding_release": release,
        "active_assignments": registry.active_assignments(chain.address),
        "balance": chain.contracts.token.balance_of(chain.address),
        "claimable": chain.contracts.escrow.claimable(chain.address),
        "capabilities_hash": to_hex32(bytes(capabilities)), "capabilities_uri": uri,
        "outcomes": outcomes,
        "agreement_rate": round(outcomes.get("agreed", 0) / finalized, 4) if finalized else None,
    }
    if json_output:  # amounts in wei as strings: JSON numbers past 2**53 lose digits in most parsers
        amounts = ("stake", "min_stake", "unbonding", "balance", "claimable")
        typer.echo(json.dumps({k: str(v) if k in amounts else v for k, v in report.items()}, indent=2))
        return
    table = Table(title=f"Provider {chain.address}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key in ("stake", "min_stake", "unbonding", "balance", "claimable"):
        table.add_row(key.replace("_", " "), _grid(int(report[key])))
    from hashgrid.chain.reverts import when

    release_at = (when(release, chain.contracts.client.timestamp()) + " (`hashgrid provider withdraw` then)"
                  if unbonding else "-")
    for key in ("eligible", "unbonding_release", "active_assignments", "operator", "capabilities_hash",
                "capabilities_uri", "agreement_rate"):
        shown = release_at if key == "unbonding_release" else str(report[key])
        if key == "eligible" and not report[key]:
            shown = "False: below the minimum stake, no work is assigned (`hashgrid provider stake AMOUNT`)"
        table.add_row(key.replace("_", " "), shown)
    table.add_row("replicas", ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())) or "none yet")
    console.print(table)


@app.command()
@_chain_errors
def earnings(address: AddressOption = None, json_output: Annotated[bool, typer.Option("--json")] = False,
             config_path: ConfigOption = None) -> None:
    """Payments per task (ReplicaFinalized.paid, credited in the escrow) and slashes (Slashed), from chain
    events; with what is still claimable and what was claimed (`hashgrid provider claim` withdraws)."""
    chain = _Chain(config_path, need_key=False, address=address)
    escrow = chain.contracts.escrow
    start = chain.contracts.deployment.start_block
    rows: list[dict[str, Any]] = []
    for event in escrow.events(start, names=["ReplicaFinalized"], provider=chain.address):
        if int(event.args["paid"]):
            rows.append({"task_id": int(event.args["taskId"]), "kind": "paid",
                         "amount": int(event.args["paid"]), "block": event.block_number, "tx": event.tx_hash})
    for event in chain.contracts.registry.events(start, names=["Slashed"], provider=chain.address):
        rows.append({"task_id": int(event.args["taskId"]), "kind": "slashed",
                     "amount": -int(event.args["amount"]), "block": event.block_number, "tx": event.tx_hash})
    rows.sort(key=lambda row: (row["block"], row["task_id"]))
    total = sum(row["amount"] for row in rows)
    claimed = sum(int(e.args["amount"]) for e in escrow.events(start, names=["Claimed"],
                                                                first_indexed=chain.address))
    claimable = escrow.claimable(chain.address)
    if json_output:
        entries = [{**row, "amount": str(row["amount"])} for row in rows]  # wei as strings (past 2**53)
        typer.echo(json.dumps({"address": chain.address, "entries": entries, "net": str(total),
                               "claimable": str(claimable), "claimed": str(claimed)}, indent=2))
        return
    table = Table(title=f"Earnings of {chain.address}", title_justify="left")
    for column in ("task", "kind", "amount (GRID)", "block", "tx"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(str(row["task_id"]), row["kind"], f"{row['amount'] / GRID:,.6f}", str(row["block"]),
                      row["tx"])
    console.print(table)
    console.print(f"net {_grid(total)} over {len(rows)} entries", highlight=False)
    console.print(f"claimable {_grid(claimable)}; claimed so far {_grid(claimed)}", highlight=False)


@app.command()
@_chain_errors
def claim(config_path: ConfigOption = None, json_output: JsonOption = False) -> None:
    """Withdraw this provider's escrow credits (payments for agreeing replicas) to its wallet."""
    chain = _Chain(config_path, need_key=True)
    escrow = chain.contracts.escrow
    owed = escrow.claimable(chain.address)
    if owed == 0:
        if json_output:
            typer.echo(json.dumps({"address": chain.address, "claimed": "0"}, indent=2))
            return
        console.print("nothing to claim", highlight=False)
        return
    receipt = escrow.claim(sender=chain.signer())
    amount = escrow.claimed_amount(receipt)
    balance = chain.contracts.token.balance_of(chain.address)
    if json_output:
        typer.echo(json.dumps({"address": chain.address, "claimed": str(amount), "balance": str(balance),
                               "tx": "0x" + bytes(receipt["transactionHash"]).hex()}, indent=2))
        return
    console.print(f"claimed {_grid(amount)} (tx 0x{bytes(receipt['transactionHash']).hex()}); "
                  f"wallet now {_grid(balance)}", highlight=False)


@app.command()
def run(
    config_path: ConfigOption = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", help="Hashgrid state dir (default: HASHGRID_STATE_DIR); the journal and task logs go "
                            "to <state_dir>/provider")] = None,
    rpc: Annotated[str | None, typer.Option("--rpc", help="RPC URL (default: HASHGRID_RPC_URL)")] = None,
    deployment: Annotated[Path | None, typer.Option(
        "--deployment", help="deployment file (default: HASHGRID_DEPLOYMENT_FILE or "
                             "<state_dir>/deployment.json)")] = None,
    content_dir: Annotated[Path | None, typer.Option(
        "--content-dir", help="content store with specs and inputs (default: the config's paths.content; "
                              "in chain-only mode, the dir the customer uploads to)")] = None,
    once: Annotated[bool, typer.Option("--once", help="process what is pending, then exit")] = False,
    max_parallel: Annotated[int | None, typer.Option(
        "--max-parallel", min=1, help="tasks at once (default: the offered cores)")] = None,
    poll_interval: Annotated[float, typer.Option(help="seconds between chain polls")] = 1.0,
    grace: Annotated[float, typer.Option(help="seconds running tasks get to finish at shutdown")] = 30.0,
    confirmations: Annotated[int, typer.Option(help="blocks an assignment must be buried under")] = 0,
    claim_every: Annotated[float | None, typer.Option(
        "--claim-every", min=1, help="seconds between withdrawals of escrow credits (default: never; "
                                     "`hashgrid provider claim` withdraws by hand)")] = None,
    fault: Annotated[str | None, typer.Option(
        "--fault", help="TEST/DEMO FAULT INJECTION ONLY: dishonest (commit and reveal a wrong result hash), "
                        "crash-after-commit (exit right after a commit is mined, before journaling it) or "
                        "copycat (commit a co-replica's hash read from the marketplace, else a wrong one)"),
    ] = None,
    marketplace: Annotated[str | None, typer.Option(
        "--marketplace", envvar="HASHGRID_MARKETPLACE_URL",
        help="marketplace API URL: take assignments from it (long-poll), fetch specs and inputs from it, and "
             "report logs, outputs, usage and status to it (without it: chain-only mode, assignments from "
             "TaskAssigned events only, and no marketplace ever assigns work to this provider)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """The provider daemon: register, take assignments, run them, commit and reveal results on chain."""
    import signal

    from hashgrid.config import get_settings
    from provider.daemon import DaemonOptions, Fault, build_daemon

    for name, value in (("HASHGRID_STATE_DIR", state_dir), ("HASHGRID_RPC_URL", rpc),
                        ("HASHGRID_DEPLOYMENT_FILE", deployment)):
        if value is not None:
            os.environ[name] = str(value)
    get_settings.cache_clear()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, force=True,
                        handlers=[_log_handler()])
    for noisy in ("web3", "urllib3", "docker", "asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        chosen_fault = Fault(fault) if fault else None
    except ValueError:
        raise _fail(InvalidInput(f"unknown --fault {fault!r}; known: "
                                  f"{', '.join(f.value for f in Fault)}")) from None
    try:
        chain = _Chain(config_path, need_key=True)
        settings = get_settings()
        config = chain.config
        options = DaemonOptions(state_dir=settings.state_dir / "provider",
                                content_dir=content_dir or config.content_dir, workdir=config.workdir,
                                max_parallel=max_parallel, poll_interval=poll_interval, grace_period=grace,
                                confirmations=confirmations, claim_interval=claim_every,
                                fault=chosen_fault)
        if marketplace is None:
            logging.getLogger("provider").warning(
                "chain-only mode: no --marketplace (or HASHGRID_MARKETPLACE_URL), so no heartbeats and no "
                "marketplace will assign work to this provider; only TaskAssigned events on chain run")
        daemon = build_daemon(config=config, contracts=chain.contracts, private_key=chain.signer(),
                              options=options, marketplace_url=marketplace)
        signal.signal(signal.SIGTERM, lambda _signum, _frame: daemon.request_stop())
        signal.signal(signal.SIGINT, lambda _signum, _frame: daemon.request_stop())
        code = daemon.run(once=once)
        daemon.journal.close()
    except HashgridError as exc:
        raise _fail(exc) from None
    # Everything is journaled and closed. Exit without interpreter finalization: after a wasm run was
    # cancelled, wasmtime's tokio worker threads can abort the process while Python tears down (intermittent).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
