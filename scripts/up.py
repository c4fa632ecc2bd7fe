"""`hashgrid up` / `make up`: a live local Hashgrid network in one command, and `hashgrid down` to stop it.

up: anvil (or --rpc: an existing chain, left running), the contracts deployed, the marketplace API with its
background jobs (in-process, or Celery worker + beat with --redis), N provider daemons (funded, staked; the
last --cheaters of them report wrong results), then the customer: blobs uploaded, specs registered (signed
POST /tasks), a batch of tasks posted on chain (samples plus one that cannot be placed), followed live until
settled, and a summary (results, verification, earnings, slashes, refunds, the explorer's view).

Everything lives in <state_dir>/up/: the lock (the running launcher's pid), pid files of each process it
started, their logs, the deployment file, the SQLite database and summary.json. Ctrl-C, SIGTERM or the end
stops every process it started (their process groups: terminate, then kill after a grace period).
DEV-ONLY: the accounts are anvil's well-known dev keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.rule import Rule
from rich.table import Table

from hashgrid.config import ANVIL_DEV_KEYS, REPO_ROOT, Settings

GRID = 10**18
PROVIDER_FUNDS = 60_000 * GRID
# large: a cheater loses half its stake per dissent and must stay eligible for the whole batch
PROVIDER_STAKE = 50_000 * GRID
CUSTOMER_FUNDS = 100_000 * GRID
CANARY_WALLETS = 4  # the marketplace's canary customers (dev canary key, DEV-ONLY), funded like a customer
EXAMPLES = REPO_ROOT / "examples"
GRACE_S = 15.0
RESTART_FIRST_S = 1.0  # a provider that dies is restarted after this, doubling while it keeps dying
RESTART_MAX_S = 60.0
RESTART_STABLE_S = 60.0  # a restart that lived this long resets the back-off
STAGES = ("posted", "assigned", "running", "revealing", "settled")
TERMINAL = {"settled", "failed", "cancelled", "expired"}
EXIT_RUNNING = 2

console = Console()


class Runtime(StrEnum):
    auto = "auto"
    wasm = "wasm"
    docker = "docker"
    all = "all"


class UpFailed(Exception):
    """A step failed: `reason` is the one-line message, `log` the file whose tail explains it."""

    def __init__(self, reason: str, log: Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log


# ---------------------------------------------------------------------------------------------- state folder
@dataclass(frozen=True)
class StateDir:
    """The one project-local folder of a launcher run (<state_dir>/up)."""

    root: Path

    @classmethod
    def default(cls) -> StateDir:
        return cls(Settings().state_dir / "up")

    @property
    def lock(self) -> Path:
        return self.root / "up.lock"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def deployment(self) -> Path:
        return self.root / "deployment.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


def pid_alive(pid: int) -> bool:
    """True when `pid` is a live process (not a zombie): read from /proc, no psutil needed."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def take_lock(state: StateDir) -> None:
    """Create the lock with our pid; a live holder means another `up` runs (exit 2, not a port fight)."""
    state.root.mkdir(parents=True, exist_ok=True)
    for _attempt in range(2):
        try:
            fd = os.open(state.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_pid(state.lock)
            if holder is not None and holder != os.getpid() and pid_alive(holder):
                console.print(f"[red]error:[/] hashgrid up is already running (pid {holder}, state in "
                              f"{state.root}); stop it with `hashgrid down`", highlight=False)
                raise typer.Exit(EXIT_RUNNING) from None
            state.lock.unlink(missing_ok=True)  # stale: its launcher is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return
    raise UpFailed(f"cannot take the lock {state.lock}")


def clear_previous_run(state: StateDir) -> None:
    """Each run starts a fresh chain, so the last run's database, journals, logs and summary are stale."""
    for entry in state.root.iterdir():
        if entry == state.lock:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def kill_group(pid: int, grace: float = GRACE_S) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL it after `grace` seconds if anything is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the leader or any straggler of its group


# ------------------------------------------------------------------------------------------------- processes
@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Restart:
    """How to bring back a process that may die without taking the network down (a provider daemon)."""

    command: list[str]
    env: dict[str, str]
    started: float = field(default_factory=time.monotonic)
    delay: float = RESTART_FIRST_S  # the back-off before the next restart
    due: float | None = None  # when the dead process is restarted (None: not seen dead yet)
    restarts: int = 0


@dataclass
class Supervisor:
    """Starts subprocesses in their own sessions (a pid file and a log each); stops them all, newest first.
    A process spawned with `restart=True` that dies is restarted with back-off (1 s, doubling up to 60 s
    while it keeps dying within a minute); any other death fails the run."""

    state: StateDir
    procs: list[Proc] = field(default_factory=list)
    restartable: dict[str, Restart] = field(default_factory=dict)
    healed: list[dict[str, Any]] = field(default_factory=list)  # each restart: name, status, delay

    def spawn(self, name: str, command: list[str], env: dict[str, str], *, restart: bool = False,
              append: bool = False) -> Proc:
        self.state.logs.mkdir(parents=True, exist_ok=True)
        self.state.pids.mkdir(parents=True, exist_ok=True)
        log = self.state.logs / f"{name}.log"
        with log.open("ab" if append else "wb") as sink:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        (self.state.pids / f"{name}.pid").write_text(f"{process.pid}\n")
        proc = Proc(name, process, log)
        self.procs.append(proc)
        if restart:
            self.restartable[name] = Restart(list(command), dict(env))
        return proc

    def forget(self, name: str) -> None:
        """Stop restarting `name` (it is being stopped on purpose)."""
        self.restartable.pop(name, None)

    def _heal(self, proc: Proc, plan: Restart) -> None:
        """Restart a dead restartable process once its back-off has passed (its log is appended to)."""
        now = time.monotonic()
        if plan.due is None:
            if now - plan.started >= RESTART_STABLE_S:
                plan.delay = RESTART_FIRST_S  # it ran well for a while: this death is a new story
            plan.due = now + plan.delay
            console.print(f"[yellow]{proc.name} exited (status {proc.process.returncode}); restarting it in "
                          f"{plan.delay:.0f} s[/]", highlight=False)
            self.healed.append({"name": proc.name, "status": proc.process.returncode, "delay_s": plan.delay})
            return
        if now < plan.due:
            return
        self.procs.remove(proc)
        plan.restarts += 1
        plan.started, plan.due, plan.delay = now, None, min(RESTART_MAX_S, plan.delay * 2)
        self.spawn(proc.name, plan.command, plan.env, append=True)
        console.print(f"{proc.name} restarted (restart {plan.restarts})", highlight=False)

    def adopt(self, name: str, pid: int, log: Path) -> None:
        """Record a process started elsewhere (anvil) so `hashgrid down` finds it too."""
        self.state.pids.mkdir(parents=True, exist_ok=True)
        (self.state.pids / f"{name}.pid").write_text(f"{pid}\n")
        _ = log

    def check(self) -> None:
        """Fail the run when a process that must not die has died; restart restartable ones with back-off."""
        for proc in list(self.procs):
            if proc.alive():
                continue
            plan = self.restartable.get(proc.name)
            if plan is None:
                raise UpFailed(f"{proc.name} exited unexpectedly (status {proc.process.returncode})",
                               proc.log)
            self._heal(proc, plan)

    def stop_all(self) -> None:
        """Terminate every group at once, wait out the grace, then kill what is left."""
        for proc in reversed(self.procs):
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for proc in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.process.pid, signal.SIGKILL)
            proc.process.wait()
            (self.state.pids / f"{proc.name}.pid").unlink(missing_ok=True)
        self.procs.clear()


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment without HASHGRID_* settings leaking into children, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
    env.update(extra)
    env.setdefault("COLUMNS", "200")
    return env


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, supervisor: Supervisor,
             log: Path | None = None, interval: float = 0.2) -> Any:
    """Poll `condition` until truthy; a dead child or the deadline fails the run."""
    deadline = time.monotonic() + timeout
    while True:
        supervisor.check()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise UpFailed(f"timed out after {timeout:.0f}s waiting for {what}", log)
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------- tasks
@dataclass
class PlannedTask:
    """One task the customer posts: its spec document, the content it needs, and whether it can be placed."""

    label: str
    runtime: str
    document: dict[str, Any]
    blobs: list[Path]
    placeable: bool = True
    task_id: int = 0
    spec_hash: bytes = b""


def _by_sha256() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in EXAMPLES.rglob("*"):
        if path.is_file() and path.stat().st_size < 16 * 2**20:
            found.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return found


def plan_tasks(count: int, *, docker: bool, replicas: int, quorum: int) -> list[PlannedTask]:
    """`count` sample tasks cycling over AI (docker), shell (docker) and WASM, one under a trust level
    (adaptive replication: the verifier adds a partner) and one needing a GPU."""
    from hashgrid.spec import load_spec, spec_document

    files = _by_sha256()
    kinds = (["ai", "wasm", "shell"] if docker else ["wasm"])
    tasks: list[PlannedTask] = []

    def content(document: dict[str, Any]) -> list[Path]:
        wanted = [item["sha256"] for item in document.get("inputs", [])]
        if document.get("module"):
            wanted.append(document["module"])
        missing = [sha for sha in wanted if sha not in files]
        if missing:
            raise UpFailed(f"example content {missing[0][:12]}… not found under {EXAMPLES}: run `make setup`")
        return [files[sha] for sha in wanted]

    for index in range(count):
        kind = kinds[index % len(kinds)]
        document = spec_document(load_spec(EXAMPLES / f"{kind}.yaml"))
        document.update(name=f"{document['name']} {index + 1}", replicas=replicas, quorum=quorum,
                        max_replicas=replicas)
        # the escrow wants deadlines past its commit and reveal windows (20 minutes on the dev deployment)
        document["deadline_s"] = max(int(document.get("deadline_s", 0)), 3600)
        tasks.append(PlannedTask(kind, document["runtime"], document, content(document)))
    if replicas >= 3:  # adaptive replication: one replica, checked by a partner (no provider is trusted yet)
        adaptive = spec_document(load_spec(EXAMPLES / "wasm.yaml"))
        adaptive.update(name="adaptive wasm", replicas=1, quorum=1, max_replicas=3, trust="standard")
        adaptive["deadline_s"] = max(int(adaptive.get("deadline_s", 0)), 3600)
        tasks.append(PlannedTask("adaptive", "wasm", adaptive, content(adaptive)))
    gpu = spec_document(load_spec(EXAMPLES / "shell.yaml"))
    gpu.update(name="needs a GPU", replicas=1, quorum=1, max_replicas=1)
    gpu["resources"]["gpus"] = 1
    gpu["deadline_s"] = 3600
    tasks.append(PlannedTask("gpu", "docker", gpu, content(gpu), placeable=False))
    return tasks


def docker_reachable() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "not reachable", which is a normal answer here
        return False


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class Options:
    providers: int
    cheaters: int
    tasks: int
    runtime: Runtime
    rpc: str | None
    redis: str | None
    database: str | None
    timeout: float
    keep: bool = False  # leave the network up after the summary


def tokens(amount: int) -> str:
    """GRID with enough decimals for the small sample prices (the explorer's 4 would show 0)."""
    return f"{amount / GRID:,.8f}".rstrip("0").rstrip(".") + " GRID" if amount else "0"


def _log_tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _step(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False, soft_wrap=True)


def _progress_view(tasks: list[PlannedTask], rows: dict[int, dict[str, Any]], progress: Progress,
                   bars: dict[str, Any]) -> Group:
    placeable = [t for t in tasks if t.placeable]
    rank = {stage: i for i, stage in enumerate(STAGES)}
    for i, stage in enumerate(STAGES):
        reached = sum(1 for t in placeable
                      if rank.get(str(rows.get(t.task_id, {}).get("status", "")), -1) >= i
                      or (stage != "settled" and rows.get(t.task_id, {}).get("status") in TERMINAL))
        progress.update(bars[stage], completed=reached)
    table = Table(title="tasks", title_justify="left")
    for column in ("id", "task", "runtime", "status", "note"):
        table.add_column(column)
    for t in tasks:
        row = rows.get(t.task_id, {})
        note = row.get("unplaced_reason") or (row.get("result_hash") or "")[:18]
        table.add_row(str(t.task_id), t.document["name"], t.runtime, str(row.get("status", "posting")), note)
    return Group(progress, table)


def run_up(options: Options, state: StateDir, supervisor: Supervisor) -> dict[str, Any]:
    """The whole launcher; raises UpFailed with a reason (and the log to show) on any failure."""
    from billing.invoice import invoice_from_events  # noqa: F401 - imported early: fail before starting anything
    from hashgrid.chain.client import ChainClient
    from hashgrid.chain.contracts import Contracts, TaskTerms
    from hashgrid.config import DEV_CANARY_KEY
    from hashgrid.explorer import Explorer
    from hashgrid.signing import HashgridAuth
    from provider.config import Offer, Prices, ProviderConfig, render_config
    from provider.policy import Policy
    from scripts.deploy import deploy
    from scripts.devnet import DevAccounts, claim_all, fund, fund_canary_wallets, stake_provider
    from scripts.explorer import fold, grid, short, stats_table
    from scripts.localnet import Anvil, free_port

    started = time.monotonic()
    accounts = DevAccounts.from_keys(providers=options.providers)
    use_docker = options.runtime in (Runtime.docker, Runtime.all) or (
        options.runtime == Runtime.auto and docker_reachable())
    if use_docker and options.runtime != Runtime.auto and not docker_reachable():
        raise UpFailed("--runtime docker needs a reachable docker engine (`docker info` fails)")
    runtimes = ["wasm", "docker"] if use_docker else ["wasm"]

    # chain + contracts
    if options.rpc:
        rpc = options.rpc
        _step(f"using the chain at {rpc} (left running)")
    else:
        anvil = Anvil()
        anvil.start()
        assert anvil.process is not None
        supervisor.adopt("anvil", anvil.process.pid, state.logs / "anvil.log")
        supervisor_anvil.append(anvil)
        rpc = anvil.url
        _step(f"anvil at {rpc}")
    client = ChainClient(rpc)
    deployment = deploy(client, deployer=accounts.deployer, out=state.deployment)
    contracts = Contracts.load(client, deployment)
    _step(f"contracts deployed (escrow {contracts.escrow.address}); deployment file {state.deployment}")
    fund(contracts, accounts, customer_amount=CUSTOMER_FUNDS, provider_amount=PROVIDER_FUNDS)
    canary_wallets = fund_canary_wallets(contracts, DEV_CANARY_KEY, CANARY_WALLETS, sender=accounts.deployer)
    for provider in accounts.providers:
        stake_provider(contracts, provider, PROVIDER_STAKE)
    cheaters = {p.address for p in accounts.providers[len(accounts.providers) - options.cheaters:]} \
        if options.cheaters else set()
    _step(f"{options.providers} providers funded and staked {grid(PROVIDER_STAKE)} each "
          f"({options.cheaters} dishonest); runtimes: {', '.join(runtimes)}")
    _step(f"canaries on: {len(canary_wallets)} canary wallets funded (dev canary key); the marketplace posts "
          "known-answer tasks as real tasks settle")

    # marketplace (+ Celery)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database = options.database or f"sqlite:///{state.root / 'marketplace.db'}"
    market_env = clean_env(
        HASHGRID_STATE_DIR=str(state.root / "marketplace"), HASHGRID_DATABASE_URL=database,
        HASHGRID_RPC_URL=rpc, HASHGRID_DEPLOYMENT_FILE=str(state.deployment),
        HASHGRID_CHAIN_ID=str(client.chain_id), HASHGRID_MARKETPLACE_URL=url, HASHGRID_RUN_JOBS="true",
        HASHGRID_INDEX_INTERVAL_S="0.2", HASHGRID_MATCHING_INTERVAL_S="0.5", HASHGRID_SETTLE_INTERVAL_S="0.5",
        HASHGRID_POLL_INTERVAL_S="0.1", HASHGRID_CANARY_KEY=DEV_CANARY_KEY,
        HASHGRID_CANARY_WALLETS=str(CANARY_WALLETS))
    if options.redis:
        market_env["HASHGRID_REDIS_URL"] = options.redis
    server = supervisor.spawn("marketplace", [sys.executable, "-m", "hashgrid.cli", "marketplace", "serve",
                                              "--port", str(port), "--log-level", "info"], market_env)
    if options.redis:
        celery = [sys.executable, "-m", "celery", "-A", "marketplace.jobs.celery_app"]
        supervisor.spawn("celery-worker", [*celery, "worker", "-Q", "hashgrid", "--loglevel", "info",
                                           "--concurrency", "2"], market_env)
        supervisor.spawn("celery-beat", [*celery, "beat", "--loglevel", "info", "-s",
                                         str(state.root / "celerybeat-schedule")], market_env)

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=90, what="the marketplace API", supervisor=supervisor, log=server.log)
    _step(f"marketplace at {url} (database {database}; jobs {'Celery' if options.redis else 'in-process'})")
    _step(f"web app at {url}/app/ (connect a wallet on chain {client.chain_id}; docs/webapp.md)")

    # provider daemons
    from hashgrid.spec import load_spec

    images = [img for name in ("ai", "shell") if (img := load_spec(EXAMPLES / f"{name}.yaml").image_id)]
    names: dict[str, str] = {accounts.customer.address: "customer", contracts.timelock.address: "treasury"}
    honest_commands: dict[str, tuple[str, list[str], dict[str, str]]] = {}
    for index, provider in enumerate(accounts.providers):
        name = f"provider{index + 1}"
        names[provider.address] = name + (" (dishonest)" if provider.address in cheaters else "")
        home = state.root / name
        home.mkdir(parents=True, exist_ok=True)
        config = ProviderConfig(
            offer=Offer(cores=2, memory_mb=2048, disk_mb=1024),
            prices=Prices(fixed=10**14, per_cpu_second=10**12, per_gb_second=10**11),
            policy=Policy(runtimes=runtimes, allowed_images=images))  # type: ignore[arg-type]
        (home / "provider.toml").write_text(render_config(config))
        command = [sys.executable, "-m", "hashgrid.cli", "provider", "run",
                   "--config", str(home / "provider.toml"), "--state-dir", str(home), "--rpc", rpc,
                   "--deployment", str(state.deployment),
                   "--content-dir", str(home / "content"), "--poll-interval", "0.2", "--grace", "10",
                   "--marketplace", url]
        daemon_env = clean_env(HASHGRID_PROVIDER_KEY="0x" + provider.key.hex().removeprefix("0x"),
                               HASHGRID_CHAIN_ID=str(client.chain_id))
        honest_commands[provider.address] = (name, list(command), daemon_env)
        if provider.address in cheaters:
            command += ["--fault", "dishonest"]
        supervisor.spawn(name, command, daemon_env, restart=True)  # a dead provider heals; the network stays

    def registered() -> bool:
        for provider in accounts.providers:
            try:
                response = httpx.get(f"{url}/providers/{provider.address.lower()}/info", timeout=5)
            except httpx.HTTPError:
                return False
            if response.status_code != 200 or not response.json()["provider"]["online"]:
                return False
        return True

    wait_for(registered, timeout=120, what="every provider online", supervisor=supervisor,
             log=supervisor.procs[-1].log)
    _step(f"{options.providers} provider daemons online")

    # the customer: content, specs, one batch on chain
    customer = httpx.Client(base_url=url, auth=HashgridAuth(accounts.customer, chain_id=client.chain_id),
                            timeout=30)
    replicas = min(3, options.providers)
    quorum = min(2, replicas)
    tasks = plan_tasks(options.tasks, docker=use_docker, replicas=replicas, quorum=quorum)
    uploaded: set[Path] = set()
    for task in tasks:
        for blob in task.blobs:
            if blob in uploaded:
                continue
            data = blob.read_bytes()
            response = customer.put(f"/blobs/{hashlib.sha256(data).hexdigest()}", content=data)
            if response.status_code not in (200, 201):
                raise UpFailed(f"uploading {blob.name} failed: {response.status_code} {response.text[:200]}",
                               server.log)
            uploaded.add(blob)
        response = customer.post("/tasks", json=task.document)
        if response.status_code not in (200, 201):
            raise UpFailed(f"registering {task.document['name']!r} failed: {response.status_code} "
                           f"{response.text[:300]}", server.log)
        task.spec_hash = bytes.fromhex(response.json()["spec_hash"].removeprefix("0x"))
    now = client.timestamp()
    terms = [TaskTerms(spec_hash=t.spec_hash, replicas=t.document["replicas"], quorum=t.document["quorum"],
                       max_replicas=t.document["max_replicas"],
                       max_price_per_replica=int(t.document["max_price_per_replica"]),
                       deadline=now + int(t.document["deadline_s"])) for t in tasks]
    token, escrow = contracts.token, contracts.escrow
    watched = [accounts.customer.address, *(p.address for p in accounts.providers),
               contracts.timelock.address]
    before = {a: token.balance_of(a) for a in watched}
    total = sum(escrow.escrow_for(t.max_replicas, t.max_price_per_replica) for t in terms)
    token.approve(escrow.address, total, sender=accounts.customer)
    receipt = escrow.post_tasks(terms, sender=accounts.customer)
    for task, task_id in zip(tasks, escrow.task_ids_of(receipt), strict=True):
        task.task_id = task_id
    _step(f"customer posted {len(tasks)} tasks in one transaction, {grid(total)} escrowed")

    # follow them live
    rows: dict[int, dict[str, Any]] = {}
    progress = Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                        console=console, auto_refresh=False)
    placeable = [t for t in tasks if t.placeable]
    bars = {stage: progress.add_task(stage if stage != "revealing" else "verified", total=len(placeable))
            for stage in STAGES}

    def poll() -> None:
        # the customer's own view (signed): the public explorer shows a reported `running` as `assigned`
        response = customer.get("/tasks", params={"limit": 500}, timeout=5)
        if response.status_code == 200:
            for row in response.json()["data"]:
                rows[int(row["task_id"])] = row

    def done() -> bool:
        return all(rows.get(t.task_id, {}).get("status") in TERMINAL for t in placeable) and all(
            rows.get(t.task_id, {}).get("unplaced_reason") for t in tasks if not t.placeable)

    deadline = time.monotonic() + options.timeout
    with Live(_progress_view(tasks, rows, progress, bars), console=console, refresh_per_second=4,
              transient=False) as live:
        while True:
            supervisor.check()
            with contextlib.suppress(httpx.HTTPError):
                poll()
            live.update(_progress_view(tasks, rows, progress, bars))
            if done():
                break
            if time.monotonic() > deadline:
                raise UpFailed(f"tasks not finished after {options.timeout:.0f}s (see the table above)",
                               server.log)
            time.sleep(0.25)
    console.print()

    # outcomes from the chain
    explorer = Explorer(contracts)
    console.print(Rule("results (from chain events)"))
    results = Table(title="tasks", title_justify="left")
    for column in ("id", "task", "state", "result hash", "verification", "paid", "fee", "refund"):
        results.add_column(column, overflow="fold")
    unplaced: list[str] = []
    summary_tasks: list[dict[str, Any]] = []
    for task in tasks:
        history = explorer.task_history(task.task_id)
        outcomes = [str(v.outcome) for v in history.replica_views]
        verification = ", ".join(f"{outcomes.count(o)} {o.lower()}" for o in dict.fromkeys(outcomes)) or "-"
        reason = rows.get(task.task_id, {}).get("unplaced_reason")
        if reason:
            unplaced.append(f"task {task.task_id} ({task.document['name']}) not placed: {reason}")
        results.add_row(str(task.task_id), task.document["name"], history.state,
                        short(history.accepted_result) if history.accepted_result else "-", verification,
                        tokens(history.paid), tokens(history.fee), tokens(history.refunded))
        summary_tasks.append({
            "task_id": task.task_id, "name": task.document["name"], "kind": task.label,
            "runtime": task.runtime, "placeable": task.placeable, "state": history.state,
            "status": rows.get(task.task_id, {}).get("status"), "unplaced_reason": reason,
            "result_hash": history.accepted_result, "escrowed": str(history.escrowed),
            "paid": str(history.paid), "fee": str(history.fee), "refunded": str(history.refunded),
            "replicas": [{"provider": v.provider, "outcome": v.outcome, "paid": str(v.paid),
                          "slashed": str(v.slashed)} for v in history.replica_views]})
    console.print(fold(results))  # wrapped, never cut with "…" (a piped console is 80 wide)
    for line in unplaced:
        console.print(f"[yellow]{line}[/]", highlight=False)

    # the verifier's record of each provider (the explorer's view), read while the marketplace still runs
    reputation: dict[str, dict[str, Any]] = {}
    for provider in accounts.providers:
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            body = httpx.get(f"{url}/explorer/providers/{provider.address.lower()}", timeout=5).json()
            reputation[provider.address] = dict(body["reputation"])

    # the marketplace signs with the deployer key: stop it (and the daemons) before the deployer sends the
    # last transactions, unless the network stays up, when the customer pushes the credits instead
    closer = accounts.customer if options.keep else accounts.deployer
    if not options.keep:
        supervisor.stop_all()
        client.nonces.reset()

    # the unplaceable task is cancelled (its escrow refunded); then every credit is claimed
    for task in tasks:
        if not task.placeable and escrow.get_task(task.task_id).state.name == "POSTED":
            escrow.cancel_task(task.task_id, sender=accounts.customer)
            _step(f"cancelled task {task.task_id} ({task.document['name']}): its escrow is refunded")
    claim_all(contracts, watched, sender=closer)

    providers = Table(title="providers", title_justify="left")
    for column in ("provider", "address", "earned", "slashed", "stake now", "wallet change", "reputation"):
        providers.add_column(column)
    summary_providers: list[dict[str, Any]] = []
    for provider in accounts.providers:
        view = explorer.provider_history(provider.address)
        change = token.balance_of(provider.address) - before[provider.address]
        record = reputation.get(provider.address, {})
        shown = (f"{record['score']:.2f} ({record['verified']} verified, {record['dissents']} dissent"
                 f"{'' if record['dissents'] == 1 else 's'})" if record else "-")
        providers.add_row(names[provider.address], short(provider.address), tokens(view.rewards),
                          tokens(view.slashed), tokens(view.stake), tokens(change), shown)
        summary_providers.append({"name": names[provider.address], "address": provider.address,
                                  "dishonest": provider.address in cheaters, "earned": str(view.rewards),
                                  "slashed": str(view.slashed), "stake": str(view.stake),
                                  "reputation": record})
    console.print(fold(providers))
    refunds = sum(int(t["refunded"]) for t in summary_tasks)
    customer_change = token.balance_of(accounts.customer.address) - before[accounts.customer.address]
    console.print(f"customer {short(accounts.customer.address)}: escrowed {tokens(total)}, refunds "
                  f"{tokens(refunds)} (plus the cancelled task's escrow), all claimed; wallet change "
                  f"{tokens(customer_change)}, balance {grid(token.balance_of(accounts.customer.address))}",
                  highlight=False)
    # slashed stake goes to the DAO treasury (the timelock), never to the customer (docs/decisions.md)
    treasury = contracts.timelock.address
    slashes = contracts.registry.events(contracts.deployment.start_block, names=["Slashed"])
    slashed = sum(int(e.args["amount"]) for e in slashes)
    recipients = sorted({str(e.args["recipient"]) for e in slashes})
    treasury_change = token.balance_of(treasury) - before[treasury]
    console.print(f"treasury {short(treasury)}: slashes received {tokens(slashed)} (recipients: "
                  f"{', '.join(short(r) for r in recipients) or 'none'}), fees claimed; wallet change "
                  f"{tokens(treasury_change)}", highlight=False)
    console.print(Rule("the explorer's view"))
    stats = explorer.network_stats()
    console.print(fold(stats_table(stats)))
    balance, locked, claimable = (token.balance_of(escrow.address), escrow.total_locked(),
                                  escrow.total_claimable())
    summary = {
        "rpc": rpc, "marketplace": url, "deployment_file": str(state.deployment), "runtimes": runtimes,
        "tasks": summary_tasks, "providers": summary_providers,
        "customer": {"address": accounts.customer.address, "escrowed": str(total), "refunded": str(refunds),
                     "wallet_change": str(customer_change)},
        "treasury": {"address": treasury, "slashed_in": str(slashed), "slash_recipients": recipients,
                     "wallet_change": str(treasury_change)},
        "escrow": {"balance": str(balance), "locked": str(locked), "claimable": str(claimable)},
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    customer.close()
    if options.keep and cheaters:
        summary["reformed"] = reform_cheaters(contracts, accounts, cheaters, honest_commands, supervisor,
                                              registered)
    if options.keep:
        summary["proposal"] = str(demo_proposal(contracts, accounts))
    summary["webapp"] = f"{url}/app/"
    return summary


def demo_proposal(contracts: Any, accounts: Any) -> int:
    """--keep: one open proposal for the web app's DAO page, made by the demo customer (its GRID is above the
    proposal threshold; the operator's key is left to the marketplace, whose nonces it tracks)."""
    from scripts.governance import parameter_change, propose

    proposal_id = propose(contracts, [parameter_change(contracts, "escrow.protocolFeeBps=250")],
                          "Demo: set the protocol fee to 2.5%", sender=accounts.customer)
    _step(f"demo proposal {str(proposal_id)[:12]}… open for votes (web app: DAO page)")
    return proposal_id


def reform_cheaters(contracts: Any, accounts: Any, cheaters: Iterable[str],
                    commands: dict[str, tuple[str, list[str], dict[str, str]]], supervisor: Supervisor,
                    registered: Callable[[], bool]) -> list[dict[str, str]]:
    """--keep: the demo's dishonest providers have served their round. Each loses half its stake per dissent
    and would soon fall under the minimum, leaving too few operators for the README's 3-replica specs; so each
    is restarted honest and its stake topped up to the demo's level (its record keeps the dissents)."""
    reformed = []
    for address in sorted(cheaters):
        name, command, env = commands[address]
        supervisor.forget(name)
        for proc in [p for p in supervisor.procs if p.name == name]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.process.wait(timeout=GRACE_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.process.pid, signal.SIGKILL)
            proc.process.wait()
            supervisor.procs.remove(proc)
            (supervisor.state.pids / f"{name}.pid").unlink(missing_ok=True)
        provider = next(p for p in accounts.providers if p.address == address)
        before = contracts.registry.stake_of(address)
        missing = max(0, PROVIDER_STAKE - before)
        contracts.client.nonces.reset(address)  # its daemon sent commits and reveals since we staked it
        if missing:
            contracts.token.transfer(address, missing, sender=accounts.customer)  # not the deployer: the
            contracts.token.approve(contracts.registry.address, missing, sender=provider)  # marketplace signs
            contracts.registry.stake(missing, sender=provider)  # with that key while the network runs
        supervisor.spawn(f"{name}-honest", command, env, restart=True)
        console.print(f"[bold]{name}[/] played the dishonest provider for the demo; for your own tasks it "
                      f"now runs honest and its stake is topped up from {tokens(before)} to "
                      f"{tokens(PROVIDER_STAKE)}, so every provider stays eligible", highlight=False)
        reformed.append({"name": name, "address": address, "stake_before": str(before),
                         "stake_now": str(contracts.registry.stake_of(address))})
    wait_for(registered, timeout=120, what="every provider online again", supervisor=supervisor)
    return reformed


def write_env_file(state: StateDir, summary: dict[str, Any]) -> Path:
    """Settings for the CLI against this network: `source <state>/env` before `hashgrid task ...`."""
    path = state.root / "env"
    path.write_text("# written by `hashgrid up`: the settings of the network it runs (dev chain only)\n"
                    f"export HASHGRID_RPC_URL={summary['rpc']}\n"
                    f"export HASHGRID_MARKETPLACE_URL={summary['marketplace']}\n"
                    f"export HASHGRID_DEPLOYMENT_FILE={summary['deployment_file']}\n")
    return path


def serve_until_interrupted(state: StateDir, supervisor: Supervisor) -> None:
    """--keep: the network stays up for the user's own tasks until Ctrl-C, or until the chain or the
    marketplace dies; a provider daemon that dies is restarted with back-off (Supervisor.check)."""
    console.print(Rule("the network stays up (Ctrl-C stops it)"))
    summary = json.loads(state.summary.read_text()) if state.summary.exists() else {}
    if summary.get("webapp"):
        console.print(f"Web app: {summary['webapp']}", highlight=False)
    console.print(f"In another terminal:\n  source {state.root / 'env'}\n"
                  "  .venv/bin/hashgrid wallet new && .venv/bin/hashgrid faucet\n"
                  "  .venv/bin/hashgrid task submit examples/wasm.yaml --wait", highlight=False)
    while True:
        supervisor.check()
        time.sleep(1.0)  # idle wait for Ctrl-C; not synchronisation


supervisor_anvil: list[Any] = []  # the Anvil of this run (stopped with the other processes)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def up(
    providers: Annotated[int, typer.Option(min=1, max=len(ANVIL_DEV_KEYS) - 2,
                                           help="provider daemons to start (dev keys 2-9)")] = 3,
    tasks: Annotated[int, typer.Option(min=1, max=100, help="sample tasks to post (plus one that cannot be "
                                                            "placed)")] = 6,
    cheaters: Annotated[int, typer.Option(min=0, help="providers that report wrong results (slashed)")] = 1,
    runtime: Annotated[Runtime, typer.Option(help="auto: wasm, plus docker (runsc when available) when the "
                                                  "engine answers; wasm; docker|all: wasm and docker")] =
    Runtime.auto,
    rpc: Annotated[str | None, typer.Option(help="use this existing dev chain (not stopped) instead of "
                                                 "starting anvil")] = None,
    redis: Annotated[str | None, typer.Option(help="Redis URL: run the jobs in Celery worker + beat")] = None,
    database: Annotated[str | None, typer.Option(help="database URL (default: SQLite in the state folder)")]
    = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the tasks to finish")] = 600.0,
    keep: Annotated[bool, typer.Option(help="after the summary, keep the network running (Ctrl-C stops it) "
                                            "so you can submit your own tasks")] = False,
) -> None:
    """Run a live local Hashgrid network end to end: chain, marketplace, providers, a customer's tasks."""
    if cheaters >= providers and providers > 1 or (providers == 1 and cheaters):
        raise typer.BadParameter("--cheaters must leave a quorum of honest providers")
    state = StateDir.default()
    take_lock(state)
    clear_previous_run(state)
    supervisor = Supervisor(state)
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in handled}
    code = 0
    options = Options(providers, cheaters, tasks, runtime, rpc, redis, database, timeout, keep)
    console.print(f"[bold]hashgrid up[/]: state in {state.root} (dev keys: this local chain only)")
    try:
        summary = run_up(options, state, supervisor)
        state.summary.write_text(json.dumps(summary, indent=2) + "\n")
        write_env_file(state, summary)
        if keep:
            serve_until_interrupted(state, supervisor)
        else:
            console.print(f"done in {summary['wall_time_s']}s; summary in {state.summary}. Stopping "
                          "everything (`make up ARGS=--keep` keeps the network up for your own tasks).",
                          highlight=False)
    except KeyboardInterrupt:
        console.print("\ninterrupted: stopping every process it started")
        code = 130
    except UpFailed as exc:
        tail = _log_tail(exc.log)
        if tail:
            console.print(Rule(f"last lines of {exc.log}"))
            console.print(tail, highlight=False, markup=False)
        console.print(f"[red]error:[/] {exc.reason}", highlight=False)
        code = 1
    except Exception as exc:  # noqa: BLE001 - one line (plus logs on disk) instead of a traceback
        console.print(f"[red]error:[/] {type(exc).__name__}: {exc}", highlight=False)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()
        for anvil in supervisor_anvil:
            anvil.stop()
        supervisor_anvil.clear()
        (state.pids / "anvil.pid").unlink(missing_ok=True)
        state.lock.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code:
        raise typer.Exit(code)


def down(
    wipe: Annotated[bool, typer.Option(help="also remove the state folder (logs, database, summary)")]
    = False,
) -> None:
    """Stop whatever `hashgrid up` left running (from its lock and pid files); --wipe removes its folder."""
    state = StateDir.default()
    stopped = 0
    holder = read_pid(state.lock)
    if holder is not None and pid_alive(holder):
        os.kill(holder, signal.SIGTERM)  # the launcher stops its own children
        deadline = time.monotonic() + GRACE_S + 15
        while pid_alive(holder) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(holder):
            os.kill(holder, signal.SIGKILL)
        stopped += 1
    for pid_file in sorted(state.pids.glob("*.pid")) if state.pids.exists() else []:
        pid = read_pid(pid_file)
        if pid is not None and pid_alive(pid):
            kill_group(pid)
            stopped += 1
        pid_file.unlink(missing_ok=True)
    state.lock.unlink(missing_ok=True)
    console.print(f"stopped {stopped} process(es)" if stopped else "nothing was running")
    if wipe and state.root.exists():
        shutil.rmtree(state.root)
        console.print(f"removed {state.root}")


def _iter_pids(state: StateDir) -> Iterator[int]:
    """Pids recorded in the state folder (tests use it to check nothing is left)."""
    for pid_file in sorted(state.pids.glob("*.pid")) if state.pids.exists() else []:
        pid = read_pid(pid_file)
        if pid is not None:
            yield pid
