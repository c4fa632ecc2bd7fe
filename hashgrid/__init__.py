"""Hashgrid core: what every part imports (config, chain client, specs and hashing, signing, errors, CLI)."""

import os

__version__ = "0.1.0"

# web3, eth_account and eth_abi hash through eth_hash.auto, which would pick pycryptodome: four ctypes calls
# per hash, each releasing the GIL, so a job thread hashing hundreds of times per index run or matching round
# (selectors, event topics, addresses) waits for the API's loop to hand the GIL back each time. safe-pysha3
# (a pinned dependency) hashes without letting go. The choice is made at the first hash, after this import;
# an ETH_HASH_BACKEND set by the operator wins.
os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")
