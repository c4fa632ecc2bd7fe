"""The customer's CLI end to end (`python -m hashgrid.cli task|wallet|faucet` as subprocesses) against a live
marketplace with three wasm daemons (the `network` fixture of tests/e2e/conftest.py): a fresh wallet, funded
by the faucet, estimates and submits the wasm example with --wait, then reads its logs, result and invoice;
a spec written by `task init` (inputs by path alone, stdout counted) is submitted and its stdout downloaded;
a task nothing can place fails --wait fast with the reason, is cancelled and its refund claimed; bad inputs
fail with one line on stderr and the exit code of hashgrid.exits' table.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from hashgrid.chain.contracts import Contracts, TaskState
from hashgrid.config import ANVIL_DEV_KEYS
from scripts.devnet import GRID
from scripts.localnet import Anvil
from tests.e2e.conftest import ROOT, Network, clean_env, wait_for

pytestmark = pytest.mark.e2e
STRANGER_KEY = ANVIL_DEV_KEYS[7]
CAP = GRID // 100  # above the daemons' default ask for the example's full timeout


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hashgrid.cli", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (f"exit {result.returncode}\nstdout: {result.stdout}\n"
                                    f"stderr: {result.stderr}")
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_customer_cli_submits_and_collects(network: Network, anvil: Anvil, contracts: Contracts,
                                           wordfreq_module: Path, tmp_path: Path) -> None:
    deployment_file = tmp_path / "deployment.json"  # written by the network fixture
    env = clean_env(HASHGRID_STATE_DIR=str(tmp_path / "customer"), HASHGRID_RPC_URL=anvil.url,
                    HASHGRID_DEPLOYMENT_FILE=str(deployment_file), HASHGRID_MARKETPLACE_URL=network.url,
                    HASHGRID_KEYSTORE_PASSWORD="correct horse", STRANGER_KEY=STRANGER_KEY)

    # a new wallet, funded by the dev faucet
    address = ok(run(["wallet", "new"], env)).strip()
    assert (tmp_path / "customer/wallets/default.json").is_file()
    assert contracts.token.balance_of(address) == 0
    ok(run(["faucet", "--amount", "50"], env))
    assert contracts.token.balance_of(address) == 50 * GRID
    balance = json.loads(ok(run(["wallet", "balance", "--json"], env)))
    assert balance == {"address": address, "grid": str(50 * GRID), "eth": str(10 * GRID), "claimable": "0"}

    # the wasm example, with a cap the daemons' default prices fit under; inputs from examples/wasm
    document = yaml.safe_load((ROOT / "examples/wasm.yaml").read_text())
    document["max_price_per_replica"] = str(CAP)
    document["deadline_s"] = 3600  # past the escrow's commit + reveal windows
    spec = tmp_path / "wasm.yaml"
    spec.write_text(yaml.safe_dump(document))

    def registered() -> bool:
        for account in network.providers:
            response = httpx.get(f"{network.url}/providers/{account.address.lower()}/info", timeout=5)
            if response.status_code != 200 or not response.json()["provider"]["online"]:
                return False
        return True

    wait_for(registered, timeout=90, what="three providers online", diagnose=network.diagnose)
    estimate = json.loads(ok(run(["task", "estimate", str(spec), "--json"], env)))
    assert estimate["providers"] == 3, estimate
    assert 0 < int(estimate["low"]) <= int(estimate["high"]) <= int(estimate["escrow"])
    assert "GRID" in ok(run(["task", "estimate", str(spec)], env))

    submitted = run(["task", "submit", str(spec), "--inputs", str(ROOT / "examples/wasm"), "--wait",
                     "--timeout", "240"], env, timeout=300)
    lines = ok(submitted).split()
    if len(lines) != 2:
        pytest.fail(f"{submitted.stdout}\n{submitted.stderr}\n{network.diagnose()}")
    task_id, result_hash = int(lines[0]), lines[1]
    assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED
    accepted = contracts.escrow.result_of(task_id)
    assert accepted is not None and result_hash.lower() == "0x" + accepted.hex()
    assert "settled" in ok(run(["task", "status", str(task_id)], env))

    assert ok(run(["task", "logs", str(task_id)], env)).strip()
    assert ok(run(["task", "logs", str(task_id), "--follow"], env, timeout=60)).strip()
    out = tmp_path / "out"
    shown = ok(run(["task", "result", str(task_id), "--out", str(out)], env))
    assert result_hash in shown
    assert b"the" in (out / "result.txt").read_bytes()

    bill = json.loads(ok(run(["task", "invoice", str(task_id), "--json"], env)))
    assert bill["state"] == "settled"
    assert int(bill["paid"]) + int(bill["fee"]) + int(bill["refund"]) == int(bill["escrowed"])
    assert int(bill["refund"]) == contracts.escrow.claimable(address)
    assert "refund" in ok(run(["task", "invoice", str(task_id)], env))

    # bad inputs: one line on stderr, exit 2 for bad input, 1 for failures
    one_line_error(run(["task", "submit", str(tmp_path / "missing.yaml")], env), 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**document, "quorum": 5}))
    assert "quorum" in one_line_error(run(["task", "submit", str(bad)], env), 2)
    assert "quorum" in one_line_error(run(["task", "estimate", str(bad)], env), 2)
    one_line_error(run(["task", "status", "999999"], env), 1)
    one_line_error(run(["task", "invoice", "999999"], env), 1)
    one_line_error(run(["task", "status", str(task_id), "--key-env", "STRANGER_KEY"], env), 1)
    one_line_error(run(["task", "result", str(task_id), "--key-env", "STRANGER_KEY"], env), 1)
    one_line_error(run(["task", "cancel", str(task_id), "--key-env", "STRANGER_KEY"], env), 1)
    assert run(["task", "status", "abc"], env).returncode == 2  # typer's usage error
    assert run(["task", "submit", "--help"], env).returncode == 0
    settled = one_line_error(run(["task", "cancel", str(task_id)], env), 1)  # in words, not a raw revert
    assert "is settled" in settled and "(taskId=" not in settled

    journeys_after_the_first_task(env, tmp_path, task_id, network, contracts, address)


def journeys_after_the_first_task(env: dict[str, str], tmp_path: Path, first: int, network: Network,
                                  contracts: Contracts, address: str) -> None:
    """task init + submit by path, stdout downloaded; list; wait; fail-fast; Ctrl-C; cancel; claim."""
    # a starter spec: inputs by path alone, hashed at submit; stdout counted and downloadable
    work = tmp_path / "mine"
    wrote = ok(run(["task", "init", str(work / "task.yaml")], env))
    assert "task.yaml" in wrote and (work / "data.txt").is_file() and (work / "wordfreq.wasm").is_file()
    document = yaml.safe_load((work / "task.yaml").read_text())
    assert "sha256" not in document["inputs"][0] and document["module"] == "wordfreq.wasm"
    document["include_stdout"] = True
    document["max_price_per_replica"] = str(CAP)
    (work / "task.yaml").write_text(yaml.safe_dump(document))
    one_line_error(run(["task", "init", str(work / "task.yaml")], env), 2)  # never overwritten silently
    submitted = json.loads(ok(run(["task", "submit", str(work / "task.yaml"), "--wait", "--json",
                                   "--timeout", "240"], env, timeout=300)))
    second = int(submitted["task_id"])
    assert submitted["status"] == "settled" and submitted["result_hash"].startswith("0x")
    out = tmp_path / "out2"
    ok(run(["task", "result", str(second), "--out", str(out)], env))
    assert (out / "stdout").read_bytes().startswith(b"wrote /out/result.txt")
    assert b"words" in (out / "result.txt").read_bytes()

    # the wallet's tasks, newest first, and a second look at a finished one
    listed = json.loads(ok(run(["task", "list", "--json"], env)))
    assert [int(t["task_id"]) for t in listed["data"]][:2] == [second, first]
    assert str(second) in ok(run(["task", "list"], env))
    assert ok(run(["task", "wait", str(second)], env)).strip() == submitted["result_hash"]

    # more replicas than operators: --wait fails fast with the matcher's reason, the escrow stays locked
    document["replicas"], document["quorum"], document["max_replicas"] = 4, 3, 4
    (work / "four.yaml").write_text(yaml.safe_dump(document))
    stuck = run(["task", "submit", str(work / "four.yaml"), "--wait", "--place-timeout", "2"], env,
                timeout=120)
    assert stuck.returncode == 1, stuck.stderr
    error = stuck.stderr.strip().splitlines()[-1]
    assert "cannot be placed" in error and "3 distinct operators" in error, stuck.stderr
    assert "task " in stuck.stderr and ": posted" in stuck.stderr  # each state was shown
    unplaced = int(stuck.stdout.split()[0])

    # Ctrl-C while waiting: exit 130, the task is left as it is, and the way back is printed
    waiting = subprocess.Popen([sys.executable, "-m", "hashgrid.cli", "task", "wait", str(unplaced),
                                "--place-timeout", "0"], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert waiting.stderr is not None
    first_line = waiting.stderr.readline()  # blocks until the first state is shown
    assert f"task {unplaced}: posted" in first_line, first_line
    waiting.send_signal(signal.SIGINT)
    _out, rest = waiting.communicate(timeout=60)
    assert waiting.returncode == 130, rest
    assert f"hashgrid task wait {unplaced}" in rest and f"hashgrid task cancel {unplaced}" in rest

    # cancel it (its escrow becomes claimable) and withdraw every refund with `wallet claim`
    owed = contracts.escrow.claimable(address)
    cancelled = ok(run(["task", "cancel", str(unplaced)], env))
    assert "refunded" in cancelled and "GRID" in cancelled
    owed_now = contracts.escrow.claimable(address)
    assert owed_now > owed
    before = contracts.token.balance_of(address)
    claimed = json.loads(ok(run(["wallet", "claim", "--json"], env)))
    assert int(claimed["claimed"]) == owed_now and contracts.escrow.claimable(address) == 0
    assert contracts.token.balance_of(address) == before + owed_now == int(claimed["grid"])
    assert "nothing to claim" in ok(run(["wallet", "claim"], env))
