"""The README's customer, provider and token-holder journeys, replayed command by command as a newcomer types
them: the commands are read from README.md's own ```bash blocks (under "## Customers", "## Providers" and
"## Token holders"), so the README and this test cannot drift apart.

The replay runs in a scratch folder holding links to the checkout's `examples/` and `.venv/`, with
HASHGRID_STATE_DIR=<scratch>/.hashgrid (for `~/.hashgrid`, so `source ~/.hashgrid/up/env` and `out/` land
there, not in the checkout). How a line is played: `make up ARGS=...` starts `hashgrid up ARGS` in the
background (what `make up` runs after `make setup`), plus `--runtime wasm --tasks 2`, for speed only, and
the replay waits until it says the network stays up; `source FILE` and `export K=V` set the environment; a
line ending in `&` runs in the background until the end; any other line is a `.venv/bin/hashgrid ...`
command whose exit status must be 0, with `ID` replaced by the task id the last `task submit` printed and
`ADDRESS` by the address the last `provider init` printed. A line of any other form fails the test (the
replay must learn it first). Facts each command prints are checked against the chain: balances, the result
hash and the sha256 of the files downloaded, the refund claimed, the provider's stake and its daemon saying
it is no longer eligible, the proposal executed and the fee changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from scripts.up import pid_alive
from tests.e2e.test_up import _children_pids
from tests.polling import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
GRID = 10**18
JOURNEYS = ("Customers", "Providers", "Token holders")
UP_TEST_ARGS = ["--runtime", "wasm", "--tasks", "2"]  # speed only: the demo round before the journeys
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
HASH_RE = re.compile(r"0x[0-9a-f]{64}")


def readme_blocks(readme: Path = ROOT / "README.md") -> dict[str, list[str]]:
    """The command lines of each journey's ```bash blocks, keyed by the "## " heading they sit under."""
    blocks: dict[str, list[str]] = {}
    heading = ""
    inside = False
    for line in readme.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.strip() == "```bash":
            inside = True
        elif line.strip() == "```":
            inside = False
        elif inside and line.strip():
            blocks.setdefault(heading, []).append(line.strip())
    return blocks


@dataclass
class Replay:
    """The state a newcomer's shell would have: the environment, what commands printed, what runs in the
    background."""

    cwd: Path
    env: dict[str, str]
    background: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)  # ID, ADDRESS
    printed: list[tuple[list[str], str, str]] = field(default_factory=list)

    def contracts(self) -> Contracts:
        deployment = Deployment.load(Path(self.env["HASHGRID_DEPLOYMENT_FILE"]))
        return Contracts.load(ChainClient(self.env["HASHGRID_RPC_URL"]), deployment)

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.cwd / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(argv, cwd=self.cwd, env=self.env, stdout=sink,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self.background.append((name, process, log))
        return process

    def log_of(self, name: str) -> str:
        for who, _process, log in self.background:
            if who == name:
                return log.read_text(errors="replace")
        return ""

    def stop_background(self) -> dict[str, int]:
        codes = {}
        for name, process, _log in reversed(self.background):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, as the README says
            try:
                codes[name] = process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[name] = process.wait(timeout=30)
        return codes


def play(replay: Replay, line: str, check: Callable[[list[str], str, str], None]) -> None:
    """One README line, as the module docstring says."""
    state = replay.env["HASHGRID_STATE_DIR"]
    words = [state + w.removeprefix("~/.hashgrid") if w.startswith("~/.hashgrid") else w
             for w in shlex.split(line, comments=True)]
    assert words, line
    if words[:2] == ["make", "up"]:
        args = [w.removeprefix("ARGS=") for w in words[2:]]
        up = replay.spawn("up", [str(ROOT / ".venv/bin/hashgrid"), "up",
                                 *shlex.split(" ".join(args)), *UP_TEST_ARGS])
        env_file = Path(replay.env["HASHGRID_STATE_DIR"]) / "up" / "env"

        def network_up() -> bool:
            assert up.poll() is None, replay.log_of("up")[-6000:]
            return env_file.is_file() and "the network stays up" in replay.log_of("up")

        wait_for(network_up, timeout=600, what="`hashgrid up --keep` to keep the network up",
                 diagnose=lambda: replay.log_of("up")[-6000:])
        return
    if words[0] == "source":
        for raw in (replay.cwd / words[1]).read_text().splitlines():
            if raw.startswith("export "):
                key, _, value = raw.removeprefix("export ").partition("=")
                replay.env[key] = value
        return
    if words[0] == "export":
        key, _, value = words[1].partition("=")
        replay.env[key] = value
        return
    assert words[0] == ".venv/bin/hashgrid", f"the README replay does not know how to run: {line}"
    argv = [str(ROOT / ".venv/bin/hashgrid"),
            *[replay.last.get(w, w) if w in ("ID", "ADDRESS") else w for w in words[1:]]]
    if argv[-1] == "&":
        replay.spawn(" ".join(words[1:3]), argv[:-1])
        return
    done = subprocess.run(argv, cwd=replay.cwd, env=replay.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (f"{line}\nexit {done.returncode}\nstdout: {done.stdout}\n"
                                  f"stderr: {done.stderr}")
    assert "Traceback" not in done.stderr, done.stderr
    replay.printed.append((argv[1:], done.stdout, done.stderr))
    check(argv[1:], done.stdout, done.stderr)


def test_the_readme_journeys_work_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks()
    assert set(JOURNEYS) <= set(blocks), f"README lost a journey's code block: {sorted(blocks)}"
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
    env.update(HASHGRID_STATE_DIR=str(tmp_path / ".hashgrid"), COLUMNS="80")  # narrow: nothing may be cut
    replay = Replay(tmp_path, env)
    facts: dict[str, object] = {}
    seen: set[int] = set()

    def check(argv: list[str], out: str, err: str) -> None:
        """The facts each command prints, checked against the chain."""
        command = tuple(argv[:2])
        text = " ".join(out.split())
        if command == ("wallet", "new"):
            (address,) = ADDRESS_RE.findall(out)
            facts["customer"] = address
        elif command == ("faucet",):
            pass
        elif argv[0] == "faucet":
            assert "1,000 GRID" in text and "10 ETH" in text, out
        elif command == ("wallet", "balance"):
            contracts = replay.contracts()
            assert contracts.token.balance_of(str(facts["customer"])) == 1000 * GRID
            assert "1,000 GRID" in text and "10 ETH" in text, out
        elif command == ("task", "estimate"):
            assert "3 provider(s) online" in text, out  # the demo's cheater is eligible again (reformed)
        elif command == ("task", "submit"):
            lines = out.split()
            task_id, result_hash = int(lines[0]), lines[-1]
            replay.last["ID"] = str(task_id)
            accepted = replay.contracts().escrow.result_of(task_id)
            assert accepted is not None and result_hash == "0x" + accepted.hex(), out
            shown = [line for line in err.splitlines() if line.startswith(f"task {task_id}: ")]
            # the states a poll saw (a fast task may be settled at the first look), the last one settled
            assert shown and shown[-1] == f"task {task_id}: settled", err
            facts["result_hash"] = result_hash
        elif command == ("task", "result"):
            assert str(facts["result_hash"]) in out, out
            for row in re.findall(r"^\s+(\S+)\s+([0-9a-f]{64})\s+(\d+) bytes$", out, re.M):
                path, sha256, size = row
                data = (replay.cwd / "out" / path).read_bytes()  # `--out out/` wrote it, checked
                assert hashlib.sha256(data).hexdigest() == sha256 and len(data) == int(size), row
                facts["files"] = int(str(facts.get("files", 0))) + 1
            assert facts.get("files"), f"no output file listed and downloaded: {out}"
        elif command == ("task", "invoice"):
            refund = re.search(r"refund\s+([\d,.]+) GRID", out)
            assert refund is not None and float(refund.group(1).replace(",", "")) > 0, out
            assert "wallet claim" in text, out
        elif command == ("wallet", "claim"):
            contracts = replay.contracts()
            assert contracts.escrow.claimable(str(facts["customer"])) == 0
            claimed = re.search(r"claimed ([\d,.]+) GRID; GRID now ([\d,.]+) GRID", text)
            assert claimed is not None, out
            balance = contracts.token.balance_of(str(facts["customer"]))
            assert abs(float(claimed.group(2).replace(",", "")) - balance / GRID) < 1e-6, (out, balance)
        elif command == ("task", "list"):
            assert replay.last["ID"] in out and "settled" in out and str(facts["result_hash"]) in out, out
        elif command == ("provider", "init"):
            found = ADDRESS_RE.findall(out + err)
            assert found, out + err
            replay.last["ADDRESS"] = found[0]
            facts["provider"] = found[0]
        elif command == ("provider", "stake"):
            assert replay.contracts().registry.stake_of(str(facts["provider"])) == 200 * GRID
            assert "200" in text and "GRID" in text, out
        elif command == ("provider", "status"):
            assert str(facts["provider"]) in out and "200" in out, out  # full address: never cut with "…"
            assert "…" not in out, out

            def online() -> bool:  # the daemon started by the line before registers and beats
                response = subprocess.run([str(ROOT / ".venv/bin/hashgrid"), "explorer", "provider",
                                           str(facts["provider"]), "--json"], cwd=replay.cwd, env=replay.env,
                                          capture_output=True, text=True, timeout=120)
                return response.returncode == 0
            wait_for(online, timeout=120, what="the provider's daemon to register",
                     diagnose=lambda: replay.log_of("provider run"))
        elif command == ("provider", "earnings"):
            assert "net" in text and "GRID" in text, out
        elif command == ("provider", "unstake"):
            assert "no longer eligible" in " ".join(err.split()), err
            assert replay.contracts().registry.stake_of(str(facts["provider"])) == 50 * GRID
            # the running daemon says so too, at its next heartbeat
            wait_for(lambda: "NOT ELIGIBLE" in replay.log_of("provider run"), timeout=120,
                     what="the daemon to say it is no longer eligible",
                     diagnose=lambda: replay.log_of("provider run")[-3000:])
        elif command == ("dao", "propose"):
            assert re.search(r"proposal \d+", text), out
        elif command == ("dao", "execute"):
            assert replay.contracts().escrow.param("protocolFeeBps") == 300
        elif command == ("dao", "status"):
            assert "executed" in out and "raise the protocol fee to 3%" in text, out
        elif command == ("dao", "list"):
            assert "executed" in out, out

    try:
        for journey in JOURNEYS:
            for line in blocks[journey]:
                play(replay, line, check)
        played = {tuple(argv[:2]) for argv, _out, _err in replay.printed}
        assert {("task", "submit"), ("task", "result"), ("wallet", "claim"), ("provider", "stake"),
                ("dao", "execute")} <= played, played
        up = next(process for name, process, _log in replay.background if name == "up")
        seen |= _children_pids(up.pid)
    finally:
        codes = replay.stop_background()
    assert codes.get("up") == 130, replay.log_of("up")[-4000:]  # stopped by Ctrl-C, and it says so
    assert "reformed" in json.loads((tmp_path / ".hashgrid/up/summary.json").read_text())
    deadline = time.monotonic() + 30
    while any(pid_alive(pid) for pid in seen) and time.monotonic() < deadline:
        time.sleep(0.5)  # zombies of the launcher's children are reaped by init
    assert not [pid for pid in seen if pid_alive(pid)], "processes left running"
