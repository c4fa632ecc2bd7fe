"""The chain side of the core: compile the contracts, deploy them, send transactions, decode reverts.

Every service talks to the contracts through `ChainClient` (hashgrid.chain.client) and the bindings in
`hashgrid.chain.contracts`, so nonce management, fee choice, receipt timeouts and revert decoding live in one
place. This package imports nothing itself: reading a deployment file must not pay for web3.
"""
