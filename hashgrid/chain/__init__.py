"""The chain side of the core: compile the contracts, deploy them, send transactions, decode reverts.

Every service talks to the contracts through `ChainClient` and the bindings in `contracts`, so nonce
management, fee choice, receipt timeouts and revert decoding live in one place.
"""

from hashgrid.chain.client import ChainClient, NonceManager
from hashgrid.chain.deployment import Deployment

__all__ = ["ChainClient", "Deployment", "NonceManager"]
