"""Shared e2e harness: the marketplace (uvicorn, in-process jobs, temp SQLite) and three provider daemons on
the session's anvil, and the helpers to start, poll and stop processes (used by test_marketplace_e2e.py and
test_customer_cli.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from hashgrid.chain.deployment import Deployment
from hashgrid.config import DEV_CHAIN_ID
from hashgrid.signing import HashgridAuth
from scripts.devnet import DevAccounts
from scripts.localnet import Anvil
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any HASHGRID_* setting leaking in, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
    env.update(extra, COLUMNS="200")
    return env


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=30)


def spawn(name: str, command: list[str], env: dict[str, str], log_path: Path) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return Proc(name, process, log_path)


@dataclass
class Network:
    url: str
    db_url: str
    server: Proc
    daemons: list[Proc]
    providers: list[LocalAccount]
    rpc_url: str
    deployment_file: Path
    state: Path
    server_command: list[str] = field(default_factory=list)
    server_env: dict[str, str] = field(default_factory=dict)
    daemon_config: Path | None = None  # a provider config every daemon reads (--config)

    def stop_server(self) -> None:
        """Stop the marketplace (API and its jobs); its database and state dir stay for a restart."""
        self.server.stop()
        assert not self.server.alive()

    def start_server(self) -> None:
        """Start the marketplace again on the same port, database and state dir; wait for /health."""
        assert not self.server.alive(), "the marketplace is still running"
        self.server = spawn("marketplace", self.server_command, self.server_env, self.server.log_path)
        wait_for(self.healthy, timeout=60, what="the marketplace API", diagnose=self.server.log)

    def healthy(self) -> bool:
        assert self.server.alive(), self.server.log()
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def diagnose(self) -> str:
        parts = [f"--- {p.name} (alive={p.alive()})\n{p.log()[-4000:]}" for p in (self.server, *self.daemons)]
        return "\n".join(parts)

    def start_daemon(self, account: LocalAccount, *, fault: str | None = None, config: Path | None = None,
                     index: int | None = None) -> Proc:
        """A `hashgrid provider run --marketplace` daemon for `account` (with a TEST FAULT if given, and its
        provider config file if given); `index` restarts daemon `index` on its state dir (it must be dead)."""
        i = len(self.daemons) if index is None else index
        state = self.state / f"provider{i}"
        config = config or self.daemon_config
        env = clean_env(HASHGRID_PROVIDER_KEY="0x" + account.key.hex().removeprefix("0x"),
                        HASHGRID_CHAIN_ID=str(DEV_CHAIN_ID))
        daemon = spawn(f"provider{i}", [
            sys.executable, "-m", "hashgrid.cli", "provider", "run", "--state-dir", str(state), "--rpc",
            self.rpc_url, "--deployment", str(self.deployment_file), "--content-dir", str(state / "content"),
            "--poll-interval", "0.2", "--grace", "10", "--marketplace", self.url,
            *(["--fault", fault] if fault else []), *(["--config", str(config)] if config else [])], env,
            state / "daemon.log")
        if index is None:
            self.daemons.append(daemon)
            self.providers.append(account)
        else:
            assert not self.daemons[index].alive() and self.providers[index] == account
            self.daemons[index] = daemon
        return daemon

    def registered(self) -> bool:
        """Every daemon is alive and listed online by the marketplace (signed registration, stake checked)."""
        for account, daemon in zip(self.providers, self.daemons, strict=True):
            assert daemon.alive(), daemon.log()
            response = httpx.get(f"{self.url}/providers/{account.address.lower()}/info", timeout=5)
            if response.status_code != 200 or not response.json()["provider"]["online"]:
                return False
        return True


@pytest.fixture(scope="session")
def wordfreq_module() -> Path:
    module = ROOT / "examples/wasm/wordfreq.wasm"
    if not module.exists():
        subprocess.run(["bash", str(ROOT / "scripts/build_wasm.sh")], check=True, cwd=ROOT)
    return module


@contextmanager
def marketplace_network(anvil: Anvil, deployment: Deployment, tmp_path: Path,
                        daemons: Sequence[tuple[LocalAccount, str | None]],
                        daemon_config: Path | None = None) -> Iterator[Network]:
    """The marketplace (uvicorn, in-process jobs, temp SQLite) and a daemon per (account, fault); every
    process is stopped at the end (before the chain is reverted), and none may be left running."""
    deployment_file = deployment.save(tmp_path / "deployment.json")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db_url = f"sqlite:///{tmp_path / 'marketplace.sqlite'}"
    server_env = clean_env(
        HASHGRID_STATE_DIR=str(tmp_path / "market"), HASHGRID_DATABASE_URL=db_url,
        HASHGRID_RPC_URL=anvil.url, HASHGRID_DEPLOYMENT_FILE=str(deployment_file),
        HASHGRID_CHAIN_ID=str(DEV_CHAIN_ID), HASHGRID_MARKETPLACE_URL=url, HASHGRID_RUN_JOBS="true",
        HASHGRID_INDEX_INTERVAL_S="0.2", HASHGRID_MATCHING_INTERVAL_S="0.5",
        HASHGRID_SETTLE_INTERVAL_S="0.5", HASHGRID_POLL_INTERVAL_S="0.1")
    server_command = [sys.executable, "-m", "uvicorn", "--factory", "marketplace.api.app:app_from_env",
                      "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    server = spawn("marketplace", server_command, server_env, tmp_path / "market" / "server.log")
    network = Network(url, db_url, server, [], [], anvil.url, deployment_file, tmp_path,
                      server_command=server_command, server_env=server_env, daemon_config=daemon_config)
    try:
        wait_for(network.healthy, timeout=60, what="the marketplace API", diagnose=network.server.log)
        for account, fault in daemons:
            network.start_daemon(account, fault=fault)
        yield network
    finally:
        for proc in reversed([network.server, *network.daemons]):  # daemons first, then the API and jobs
            code = proc.stop()
            assert not proc.alive(), f"{proc.name} still running"
            if proc.name.startswith("provider"):
                assert code == 0, f"{proc.name} exited {code}:\n{proc.log()[-4000:]}"


@pytest.fixture
def network(anvil: Anvil, deployment: Deployment, dev_accounts: DevAccounts, tmp_path: Path
            ) -> Iterator[Network]:
    """The marketplace and three honest daemons (provider keys 2-4)."""
    with marketplace_network(anvil, deployment, tmp_path,
                             [(account, None) for account in dev_accounts.providers[:3]]) as network:
        yield network



def busybox() -> str:
    """The sample busybox image's id (the Docker engine started and the image built when missing)."""
    import json

    import docker

    try:
        docker.from_env().ping()
    except docker.errors.DockerException:
        subprocess.run(["bash", str(ROOT / "scripts/docker_engine.sh")], check=True, cwd=ROOT)
    listing = ROOT / "build/images.json"
    tags = json.loads(listing.read_text()) if listing.exists() else {}
    image = tags.get("hashgrid/busybox:1")
    try:
        if image and docker.from_env().api.inspect_image(image):
            return str(image)
    except docker.errors.ImageNotFound:
        pass
    subprocess.run(["bash", str(ROOT / "scripts/build_images.sh"), "--only", "busybox"], check=True, cwd=ROOT)
    return str(json.loads((ROOT / "build/images.json").read_text())["hashgrid/busybox:1"])


def docker_daemon_config(tmp_path: Path, image: str) -> Path:
    """A provider config for docker tasks of `image` only, on 2 cores (the e2e tests' daemons)."""
    from provider.config import Offer, ProviderConfig, write_config
    from provider.policy import Policy

    config = tmp_path / "provider.toml"
    write_config(ProviderConfig(offer=Offer(cores=2), policy=Policy(runtimes=["docker"],
                                                                   allowed_images=[image])), config)
    return config

def signed_client(url: str, account: LocalAccount) -> httpx.Client:
    return httpx.Client(base_url=url, auth=HashgridAuth(account, chain_id=DEV_CHAIN_ID), timeout=30)
