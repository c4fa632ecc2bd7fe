"""One signer per key: clients of separate processes (each its own ChainClient and nonce cache) that sign with
one key take their nonces from one Redis lane, so none is ever refused "nonce too low". Real anvil and a real
redis-server; the sends are not retried here (attempts=1), so any collision fails the test."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from eth_account import Account
from hexbytes import HexBytes

from hashgrid.chain.client import ChainClient
from hashgrid.config import ANVIL_DEV_KEYS
from hashgrid.errors import ChainError
from scripts.localnet import Anvil
from tests.marketplace import conftest_services as services

redis_server = services.redis_server  # a fixture

SIGNER = Account.from_key(ANVIL_DEV_KEYS[9])  # DEV-ONLY anvil key, used by no other test
TO = Account.from_key(ANVIL_DEV_KEYS[8]).address


def transfer(client: ChainClient) -> str:
    """A 1-wei transfer from SIGNER with the client's next nonce, sent once (no retry on a collision)."""
    tx = {"from": SIGNER.address, "to": TO, "value": 1, "gas": 21_000, "chainId": client.chain_id,
          **client.fees()}
    return client._send_next(tx, SIGNER, attempts=1).hex()


def test_two_processes_signing_with_one_key_collide_without_the_lane_and_never_with_it(
        anvil: Anvil, redis_server: Any) -> None:
    # without the lane: A caches its next nonce, B takes it from the chain's pending count, A reuses it
    a, b = ChainClient(anvil.url, tx_timeout=30), ChainClient(anvil.url, tx_timeout=30)
    transfer(a)
    transfer(b)
    with pytest.raises(ChainError, match="(?i)nonce too low"):
        transfer(a)

    # with the lane: the same sequence, and then four "processes" at once, 10 sends each
    clients = [ChainClient(anvil.url, tx_timeout=30) for _ in range(4)]
    for client in clients:
        client.share_nonces(redis_server.url)
    transfer(clients[0])
    transfer(clients[1])
    transfer(clients[0])
    errors: list[BaseException] = []
    sent: list[str] = []

    def burst(client: ChainClient) -> None:
        try:
            for _ in range(10):
                sent.append(transfer(client))
        except BaseException as exc:  # reported below with the others
            errors.append(exc)

    threads = [threading.Thread(target=burst, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(sent) == 40
    receipts = [clients[0].wait(tx) for tx in sent]
    assert all(r["status"] == 1 for r in receipts)
    nonces = sorted(int(clients[0].w3.eth.get_transaction(HexBytes(tx))["nonce"]) for tx in sent)
    assert nonces == list(range(nonces[0], nonces[0] + 40))  # one lane: consecutive, none twice
