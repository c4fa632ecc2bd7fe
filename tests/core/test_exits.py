"""One exit-code table for every command (hashgrid/exits.py): the table maps each error family to its code,
and a walk through the command groups as subprocesses shows the same code for the same kind of failure
whatever the command: 2 for bad input (usage, a missing spec), 4 when the chain or the marketplace does not
answer, 1 when the chain refuses (a revert), 0 for --help."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hashgrid.chain.deployment import Deployment
from hashgrid.chain.reverts import error_class
from hashgrid.config import ANVIL_DEV_KEYS
from hashgrid.errors import (
    ChainError,
    ContentMissing,
    InvalidInput,
    MarketplaceError,
    NotFound,
    SpecInvalid,
    TaskUnplaceable,
    WaitTimeout,
)
from hashgrid.exits import ExitCode, error_line, exit_code_for

ROOT = Path(__file__).resolve().parents[2]


def test_the_table() -> None:
    raw = "cancelTask: EscrowTaskNotInState(taskId=10, state=Settled(3))"
    revert = error_class("EscrowTaskNotInState")(raw, error_name="EscrowTaskNotInState",
                                                 args={"taskId": 10, "state": 3})
    assert exit_code_for(revert) == ExitCode.FAILED == 1
    assert error_line(revert) == "task 10 is settled, which does not allow this [EscrowTaskNotInState]"
    assert exit_code_for(NotFound("x")) == exit_code_for(TaskUnplaceable("x")) == 1
    assert exit_code_for(InvalidInput("x")) == exit_code_for(SpecInvalid("x", errors=[])) == 2
    assert exit_code_for(ContentMissing("x")) == exit_code_for(ValueError("x")) == 2
    assert exit_code_for(ChainError("x")) == exit_code_for(MarketplaceError("x")) == 4
    assert exit_code_for(WaitTimeout("x")) == 5
    assert exit_code_for(KeyboardInterrupt()) == 130


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed once the socket is


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hashgrid.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)


@pytest.fixture
def nothing_answers(deployment: Deployment, tmp_path: Path) -> dict[str, str]:
    """A real deployment file, but the RPC and the marketplace point at closed ports."""
    closed = _closed_port()
    path = deployment.save(tmp_path / "deployment.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHGRID_")}
    env.update(HASHGRID_STATE_DIR=str(tmp_path / "state"), HASHGRID_RPC_URL=closed,
               HASHGRID_MARKETPLACE_URL=closed, HASHGRID_DEPLOYMENT_FILE=str(path),
               HASHGRID_PRIVATE_KEY=ANVIL_DEV_KEYS[5], HASHGRID_PROVIDER_KEY=ANVIL_DEV_KEYS[5])
    return env


UNAVAILABLE = [
    ["task", "status", "1"],
    ["task", "list"],
    ["wallet", "balance", "--rpc", "{rpc}"],
    ["wallet", "claim"],
    ["faucet", "--rpc", "{rpc}"],
    ["provider", "status", "--address", "0x" + "11" * 20],
    ["dao", "status", "latest", "--rpc", "{rpc}"],
    ["dao", "list", "--rpc", "{rpc}"],
    ["explorer", "stats", "--rpc", "{rpc}"],
]


@pytest.mark.parametrize("args", UNAVAILABLE, ids=lambda a: " ".join(a[:2]))
def test_nothing_answers_is_4_everywhere(nothing_answers: dict[str, str], args: list[str]) -> None:
    done = _run([a.replace("{rpc}", nothing_answers["HASHGRID_RPC_URL"]) for a in args], nothing_answers)
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "error" in done.stderr


BAD_INPUT = [["task", "submit", "nowhere.yaml"], ["task", "estimate", "nowhere.yaml"],
             ["task", "status", "abc"], ["dao", "status", "x1"], ["provider", "stake", "1GRID", "--nonsense"],
             ["explorer", "provider", "0x12"], ["wallet", "new", "--name", "../up"]]


@pytest.mark.parametrize("args", BAD_INPUT, ids=lambda a: " ".join(a[:2]))
def test_bad_input_is_2_everywhere(nothing_answers: dict[str, str], args: list[str]) -> None:
    done = _run(args, nothing_answers)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr


def test_a_revert_is_1_in_words(chain_env: dict[str, str]) -> None:
    """The chain refuses: withdrawing with nothing unbonding, and cancelling a task that does not exist."""
    withdraw = _run(["provider", "withdraw"], chain_env)
    assert withdraw.returncode == 1, withdraw.stderr
    assert "nothing is unbonding" in withdraw.stderr and "RegistryNothingUnbonding" in withdraw.stderr


@pytest.fixture
def chain_env(nothing_answers: dict[str, str], chain: object) -> dict[str, str]:
    from hashgrid.chain.client import ChainClient

    assert isinstance(chain, ChainClient)
    return {**nothing_answers, "HASHGRID_RPC_URL": chain.rpc_url}


def test_help_is_0_everywhere(nothing_answers: dict[str, str]) -> None:
    for group in ("task", "wallet", "provider", "dao", "explorer", "chain", "up", "faucet"):
        done = _run([group, "--help"], nothing_answers)
        assert done.returncode == 0, (group, done.stderr)


def test_ctrl_c_is_130_for_any_command() -> None:
    """The root runner turns Ctrl-C anywhere into 130 (typer alone says "Aborted!" and exits 1)."""
    import typer

    from hashgrid.cli import _run

    app = typer.Typer()

    @app.command()
    def block() -> None:
        raise KeyboardInterrupt

    @app.command()
    def fine() -> None:
        return None

    for args, code in ((["block"], 130), (["fine"], 0), (["nope"], 2)):
        with pytest.raises(SystemExit) as exited:
            _run_with(app, args, _run)
        assert exited.value.code == code, (args, exited.value.code)


def _run_with(app: object, args: list[str], run: object) -> None:
    import sys

    saved = sys.argv
    sys.argv = ["hashgrid", *args]
    try:
        run(app)  # type: ignore[operator]
    finally:
        sys.argv = saved
