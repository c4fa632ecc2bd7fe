"""Property-based API testing from the app's own OpenAPI schema: whatever schemathesis sends (in-process over
ASGI, unauthenticated and with a SIWE bearer token), every schemathesis check passes (status codes, content
types, headers and bodies as documented, negative data rejected, ...), positive_data_acceptance excepted."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import CHECKS as CHECKS_REGISTRY
from schemathesis.checks import load_all_checks

from hashgrid.config import REPO_ROOT
from hashgrid.signing import siwe_login
from marketplace.api.app import create_app
from marketplace.api.chain import StaticFeeOracle, StaticStakeOracle
from marketplace.settings import MarketplaceSettings
from tests.marketplace.conftest import MIN_STAKE, wallet
from tests.marketplace.conftest_services import free_port
from tests.polling import wait_for

MAX_EXAMPLES = 15
load_all_checks()
# every check but positive_data_acceptance: the task spec's cross-field rules (quorum <= replicas, a docker
# spec names an image, ...) are not in its JSON schema, so schema-valid specs may still be 422 (docs/api.md)
CHECKS = [check for check in CHECKS_REGISTRY.get_all() if check.__name__ != "positive_data_acceptance"]


@pytest.fixture
def fuzz_app(tmp_path: Path) -> Iterator[Any]:
    config = MarketplaceSettings(
        state_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'fuzz.db'}",
        marketplace_url="http://testserver",
        max_blob_bytes=1 << 16,
        long_poll_max_s=0.0,
        poll_interval_s=0.001,
    )
    stakes = StaticStakeOracle(stakes={wallet("fuzzer").address.lower(): MIN_STAKE}, minimum=MIN_STAKE)
    yield create_app(config, stake_oracle=stakes, fee_oracle=StaticFeeOracle(100))


@pytest.fixture
def token(fuzz_app: Any) -> str:
    with TestClient(fuzz_app, base_url="http://testserver") as client:
        return siwe_login(client, wallet("fuzzer"), chain_id=31337)


def test_no_server_errors(fuzz_app: Any, token: str) -> None:
    """Each operation gets MAX_EXAMPLES generated cases (schemathesis' pytest loader does not support pytest 9
    here, so the operations are driven through hypothesis directly)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case: Any) -> None:
            for headers in ({}, {"Authorization": f"Bearer {token}"}):
                response = case.call(headers=headers)
                case.validate_response(response, checks=CHECKS, headers=headers)

        run()


CLI_EXAMPLES = 25  # per operation here; docs/api.md gives the 200-example run and its result
CLI_SEED = 42


def test_schemathesis_cli_every_check(tmp_path: Path) -> None:
    """`schemathesis run --checks all` (every phase: examples, coverage, fuzzing, stateful) with the repo's
    schemathesis.toml against the real server (tests/marketplace/fuzz_server.py: `serve`'s protocol and
    middleware, fixed fee and stakes), signed in with a SIWE token: no failure of any kind."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HASHGRID_STATE_DIR": str(tmp_path),
           "HASHGRID_MARKETPLACE_URL": f"http://127.0.0.1:{port}", "HASHGRID_RATE_LIMIT_IP": "off",
           "HASHGRID_RATE_LIMIT_WALLET": "off", "HASHGRID_RATE_LIMIT_LOGIN": "off",
           "HASHGRID_RATE_LIMIT_READ": "off"}
    env.pop("HASHGRID_REDIS_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "tests.marketplace.fuzz_server", str(port)], env=env,
                              cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return server.poll() is not None

    try:
        wait_for(up, timeout=60, what="the fuzz server")
        assert server.poll() is None
        with httpx.Client(base_url=url) as client:
            token = siwe_login(client, wallet("cli-fuzzer"), chain_id=31337)
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "run", f"{url}/openapi.json",
             "--checks", "all", "-n", str(CLI_EXAMPLES), "--seed", str(CLI_SEED),
             "-H", f"Authorization: Bearer {token}"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, run.stdout[-6000:]
        assert "passed" in run.stdout and "failure" not in run.stdout.split("Test cases:")[-1]
    finally:
        server.terminate()
        server.wait(timeout=30)
