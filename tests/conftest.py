"""Shared fixtures: a real anvil on a free loopback port, the contracts compiled and deployed once per
session, and per-test isolation by evm_snapshot / evm_revert so tests never see each other's state.

Base state every test starts from: the deployment (deployer = anvil key 0, which keeps MATCHER_ROLE and
SETTLER_ROLE), the customer (key 1) funded with 100,000 GRID, providers (keys 2-5) funded with 10,000 GRID
each, registered and staked with 1,000 GRID. Keys 6-9 hold ETH only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hashgrid.chain.client import ChainClient
from hashgrid.chain.compile import CompiledContract, compile_contracts
from hashgrid.chain.contracts import Contracts
from hashgrid.chain.deployment import Deployment
from scripts.deploy import DeployParams, deploy
from scripts.devnet import GRID, DevAccounts, fund, stake_provider
from scripts.localnet import Anvil

PROVIDER_STAKE = 1_000 * GRID


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    """One anvil for the whole session on a free port (automine: one block per transaction)."""
    with Anvil() as node:
        yield node


@pytest.fixture(scope="session")
def compiled() -> dict[str, CompiledContract]:
    return compile_contracts()


@pytest.fixture(scope="session")
def chain(anvil: Anvil) -> ChainClient:
    """The session's client (its nonce cache is reset after every test's revert)."""
    return ChainClient(anvil.url, tx_timeout=30.0)


@pytest.fixture(scope="session")
def dev_accounts() -> DevAccounts:
    return DevAccounts.from_keys()


@pytest.fixture(scope="session")
def deploy_params() -> DeployParams:
    return DeployParams()


@pytest.fixture(scope="session")
def base_deployment(
    chain: ChainClient,
    compiled: dict[str, CompiledContract],
    dev_accounts: DevAccounts,
    deploy_params: DeployParams,
) -> Deployment:
    """Deployed, funded and staked once per session (see the module docstring)."""
    deployment = deploy(chain, deploy_params, deployer=dev_accounts.deployer, compiled=compiled)
    contracts = Contracts.load(chain, deployment)
    fund(contracts, dev_accounts)
    for provider in dev_accounts.providers:
        stake_provider(contracts, provider, PROVIDER_STAKE)
    return deployment


@pytest.fixture
def deployment(chain: ChainClient, base_deployment: Deployment) -> Iterator[Deployment]:
    """The base deployment, with everything the test does rolled back afterwards."""
    snapshot = chain.rpc("evm_snapshot")
    try:
        yield base_deployment
    finally:
        chain.rpc("anvil_setAutomine", [True])
        chain.rpc("evm_revert", [snapshot])
        chain.nonces.reset()


@pytest.fixture
def contracts(chain: ChainClient, deployment: Deployment) -> Contracts:
    return Contracts.load(chain, deployment)
