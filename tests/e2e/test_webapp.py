"""The web app in a real browser against a live network: anvil with the deployment, the marketplace (uvicorn,
in-process jobs) serving the app at /app, three wasm provider daemons; Debian's headless Chromium driven by
playwright-core (web/tests/journey.mjs) with an injected EIP-1193 wallet on anvil's dev keys.

The journey: connect on the wrong network and switch, a rejected signature, SIWE sign-in, post the wasm
template (price range, three providers can run it), follow it to settlement (logs, commits, reveals, the
accepted hash), download the output and check its sha256, the invoice; an unplaceable GPU task with its
reason, cancelled and refunded through a claim; my tasks; the explorer; a reverted transaction and too little
balance in words; a DAO proposal delegated, voted, queued and executed; axe-core on every page (no serious
violation); screenshots in build/screenshots/. Afterwards the chain is checked from Python.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from billing.invoice import invoice_from_events
from hashgrid.chain.contracts import Contracts, ProposalState, TaskState
from hashgrid.config import ANVIL_DEV_KEYS
from scripts.devnet import GRID, DevAccounts
from tests.e2e.conftest import ROOT, Network, wait_for

SCREENSHOTS = ROOT / "build" / "screenshots"
JOURNEY = ROOT / "web" / "tests" / "journey.mjs"
POOR = Account.from_key(ANVIL_DEV_KEYS[8])  # ETH for gas, no GRID
VOTER = Account.from_key(ANVIL_DEV_KEYS[6])  # given 5% of the supply: above the 4% quorum
PAGES = ("connect", "post", "task", "my-tasks", "explorer", "provider", "dao", "explorer-phone")


@pytest.fixture
def voter(contracts: Contracts, dev_accounts: DevAccounts) -> LocalAccount:
    """A token holder with enough GRID to reach quorum alone (sent before the marketplace starts, so the
    deployer's nonces are the test's alone)."""
    contracts.token.transfer(VOTER.address, 5_000_000 * GRID, sender=dev_accounts.deployer)
    return VOTER


def check_served_with_its_own_csp(network: Network) -> None:
    """/app serves the built files only, under a CSP of its own; the API keeps `default-src 'none'`."""
    assert (ROOT / "build" / "webapp" / "app.js").exists(), "build/webapp is missing: run `make setup`"
    page = httpx.get(f"{network.url}/app/", timeout=10)
    assert page.status_code == 200 and '<div id="root">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert httpx.get(f"{network.url}/app", timeout=10).status_code == 308
    config = httpx.get(f"{network.url}/app/config.json", timeout=10).json()
    assert config["chain_id"] == 31337 and "postTask" in json.dumps(config["abis"]["TaskEscrow"])
    # nothing but the built files: no folders, dot files or traversal
    for probe in ("../pyproject.toml", "..%2Fpyproject.toml", ".hashgrid-stamp", "%2e%2e%2fREADME.md",
                  "templates/files/" + "0" * 64):
        assert httpx.get(f"{network.url}/app/{probe}", timeout=10).status_code == 404, probe
    # the API keeps its own CSP: no script may run on a JSON or blob answer
    assert httpx.get(f"{network.url}/health", timeout=10).headers["content-security-policy"].startswith(
        "default-src 'none'")


def test_webapp_journey_in_chromium(voter: LocalAccount, network: Network, contracts: Contracts,
                                    dev_accounts: DevAccounts, wordfreq_module: Path) -> None:
    assert wordfreq_module.exists()
    check_served_with_its_own_csp(network)
    wait_for(network.registered, timeout=90, what="three providers registered", diagnose=network.diagnose)
    fee_before = contracts.escrow.param("protocolFeeBps")
    keys = {"customer": ANVIL_DEV_KEYS[1], "poor": ANVIL_DEV_KEYS[8], "dao": ANVIL_DEV_KEYS[6],
            "provider": ANVIL_DEV_KEYS[2]}
    env = dict(os.environ, HG_URL=network.url, HG_RPC=network.rpc_url, HG_KEYS=json.dumps(keys),
               HG_OUT=str(SCREENSHOTS))
    journey = subprocess.Popen(["node", str(JOURNEY)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = journey.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(journey.pid, signal.SIGKILL)  # node and the Chromium it started: nothing left running
        stdout, stderr = journey.communicate()
    done = subprocess.CompletedProcess(journey.args, journey.returncode, stdout, stderr)
    (SCREENSHOTS / "journey.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{done.stdout[-2000:]}\n{network.diagnose()}"
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    # what the browser did is on chain
    task_id = seen["task_id"]
    assert contracts.escrow.get_task(task_id).state == TaskState.SETTLED
    result = contracts.escrow.result_of(task_id)
    assert result is not None and seen["result_hash"] == "0x" + result.hex()
    assert contracts.escrow.claimable(dev_accounts.customer.address) == 0  # the refund was claimed
    bill = invoice_from_events(task_id, contracts.escrow.events(0, "latest", first_indexed=task_id))
    assert bill is not None
    expected = {k: v for k, v in bill.to_dict().items() if k != "usage_billed"}
    expected["lines"] = [{k: v for k, v in line.items() if k != "quote"} for line in expected["lines"]]
    assert seen["invoice"] == expected  # the page's invoice is billing's, from the same chain events
    assert contracts.escrow.param("protocolFeeBps") == 300 != fee_before  # the proposal executed
    assert contracts.token.balance_of(POOR.address) == 0

    # every error message in words, every page screenshotted and checked by axe-core
    errors = seen["errors"]
    assert errors["rejected_signature"].startswith("you rejected the request in your wallet")
    assert "marketplace runs on chain 31337" in errors["wrong_network"]
    assert errors["balance"].startswith("too little GRID")
    assert errors["allowance"].startswith("the escrow may spend only 0 GRID of your GRID")
    assert "registry nothing unbonding" in errors["reverted"]
    assert "gpu" in errors["unplaceable"].lower() or "docker" in errors["unplaceable"]  # the matcher's reason
    steps = {"uploaded-spec-hashed", "stranger-view", "dao-executed", "dao-treasury-proposal", "signed-out"}
    assert steps <= set(seen["steps"]), seen["steps"]
    assert seen["states"][-1] == "settled" and len(seen["states"]) >= 2
    assert seen["typed_data"] == "Permit"  # the second task was posted with an EIP-2612 permit
    for page in PAGES:
        assert (SCREENSHOTS / f"{page}.png").stat().st_size > 5_000, page
        assert page in seen["axe"], page


def test_up_keep_opens_a_demo_proposal(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    """`make up ARGS=--keep` leaves one proposal open (made by the demo customer, not the operator's key)."""
    from scripts.governance import all_proposals
    from scripts.up import demo_proposal

    before = len(all_proposals(contracts))
    proposal_id = demo_proposal(contracts, dev_accounts)
    proposals = all_proposals(contracts)
    assert len(proposals) == before + 1
    made = proposals[-1]
    assert made.proposal_id == proposal_id and made.proposer == dev_accounts.customer.address
    assert made.description == "Demo: set the protocol fee to 2.5%"
    assert contracts.governor.state(proposal_id) in (ProposalState.PENDING, ProposalState.ACTIVE)  # open
