"""What the API reads from the chain, behind two small interfaces so unit tests can run without a node.

`StakeOracle` (the registry: a provider's stake and the minimum) and `FeeOracle` (the escrow's protocol fee,
from which the escrow a task locks is computed exactly as `TaskEscrow.escrowFor` does). The chain-backed
implementations load the deployment lazily and cache the fee briefly; a missing chain is a 503, not a crash.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from hashgrid.config import Settings
from hashgrid.errors import ChainError, HashgridError

BPS = 10_000


def escrow_for(*, max_replicas: int, max_price_per_replica: int, fee_bps: int) -> int:
    """TaskEscrow._escrowed: base = maxReplicas * price; base + base * feeBps / 10000 (integer division)."""
    base = max_replicas * max_price_per_replica
    return base + base * fee_bps // BPS


class StakeOracle(Protocol):
    def stake_of(self, address: str) -> int:
        """The provider's active stake in wei."""
        ...

    def min_stake(self) -> int:
        """The registry's minimum stake in wei."""
        ...


class FeeOracle(Protocol):
    def fee_bps(self) -> int:
        """The escrow's current protocol fee in basis points."""
        ...


@dataclass
class StaticStakeOracle:
    """Fixed stakes (tests and chain-less development): unknown addresses have no stake."""

    stakes: dict[str, int] = field(default_factory=dict)
    minimum: int = 0

    def stake_of(self, address: str) -> int:
        return self.stakes.get(address.lower(), 0)

    def min_stake(self) -> int:
        return self.minimum


@dataclass
class StaticFeeOracle:
    bps: int = 0

    def fee_bps(self) -> int:
        return self.bps


class _LazyContracts:
    """The deployment's contracts, loaded on first use (so the API starts before the chain is up)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._contracts: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self._contracts is None:
                from hashgrid.chain.client import ChainClient
                from hashgrid.chain.contracts import Contracts
                from hashgrid.chain.deployment import Deployment

                path = self._settings.deployment_path
                if not path.is_file():
                    raise ChainError(
                        f"no deployment file at {path}: the chain is not deployed yet", path=str(path)
                    )
                client = ChainClient(self._settings.rpc_url, tx_timeout=self._settings.tx_timeout_seconds)
                if self._settings.redis_url:  # the same nonce lane as the Celery workers
                    client.share_nonces(self._settings.redis_url)
                self._contracts = Contracts.load(client, Deployment.load(path))
            return self._contracts


def _chain_call(fn: Any) -> Any:
    try:
        return fn()
    except HashgridError:
        raise
    except Exception as exc:  # web3 raises connection errors of several types
        raise ChainError(f"chain call failed: {exc}") from None


class ChainStakeOracle:
    def __init__(self, settings: Settings, *, ttl_s: float = 10.0) -> None:
        self._contracts = _LazyContracts(settings)
        self._ttl_s = ttl_s
        self._minimum: tuple[float, int] | None = None

    def stake_of(self, address: str) -> int:
        from web3 import Web3

        return int(
            _chain_call(lambda: self._contracts.get().registry.stake_of(Web3.to_checksum_address(address)))
        )

    def min_stake(self) -> int:
        """minStake, cached for `ttl_s` (public views read it per request; the DAO changes it rarely)."""
        now = time.monotonic()
        if self._minimum is None or now - self._minimum[0] > self._ttl_s:
            value = int(_chain_call(lambda: self._contracts.get().registry.min_stake()))
            self._minimum = (now, value)
        return self._minimum[1]


class ChainFeeOracle:
    """protocolFeeBps from the escrow, cached for `ttl_s` (a governance change shows within that time)."""

    def __init__(self, settings: Settings, *, ttl_s: float = 30.0) -> None:
        self._contracts = _LazyContracts(settings)
        self._ttl_s = ttl_s
        self._value: tuple[float, int] | None = None

    def fee_bps(self) -> int:
        now = time.monotonic()
        if self._value is None or now - self._value[0] > self._ttl_s:
            value = int(_chain_call(lambda: self._contracts.get().escrow.param("protocolFeeBps")))
            self._value = (now, value)
        return self._value[1]
