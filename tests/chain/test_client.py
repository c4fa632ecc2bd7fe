"""The chain client under load and failure: concurrent senders from one account, a receipt that never
comes (automine off), a stale nonce, an unreachable RPC."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account

from hashgrid.chain.client import ChainClient
from hashgrid.chain.contracts import Contracts
from hashgrid.config import ANVIL_DEV_KEYS
from hashgrid.errors import ChainError, TransactionTimeout
from scripts.devnet import DevAccounts
from scripts.localnet import free_port

SENDS = 24


def test_concurrent_senders_from_one_account_get_distinct_nonces(
    contracts: Contracts, dev_accounts: DevAccounts
) -> None:
    sender, recipient = dev_accounts.deployer, dev_accounts.spare[1]
    start_nonce = contracts.client.w3.eth.get_transaction_count(sender.address)
    before = contracts.token.balance_of(recipient.address)

    def send(i: int) -> dict:
        return dict(contracts.token.transfer(recipient.address, i + 1, sender=sender))

    with ThreadPoolExecutor(max_workers=8) as pool:
        receipts = list(pool.map(send, range(SENDS)))

    assert all(r["status"] == 1 for r in receipts)
    nonces = sorted(contracts.client.w3.eth.get_transaction(r["transactionHash"])["nonce"] for r in receipts)
    assert nonces == list(range(start_nonce, start_nonce + SENDS))
    assert contracts.token.balance_of(recipient.address) - before == sum(range(1, SENDS + 1))


def test_receipt_timeout_raises_transaction_timeout(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    client = contracts.client
    client.rpc("anvil_setAutomine", [False])
    try:
        with pytest.raises(TransactionTimeout) as caught:
            client.transact(
                contracts.token.fn("transfer", dev_accounts.spare[1].address, 1),
                sender=dev_accounts.deployer,
                timeout=0.5,
            )
        assert caught.value.retryable and caught.value.code == "transaction_timeout"
    finally:
        client.rpc("evm_mine")  # mine the stuck transaction so nothing is left in the pool
        client.rpc("anvil_setAutomine", [True])


def test_failed_send_resyncs_nonce_from_chain(contracts: Contracts, dev_accounts: DevAccounts) -> None:
    client, sender = contracts.client, dev_accounts.deployer
    contracts.token.transfer(dev_accounts.spare[1].address, 1, sender=sender)
    client.nonces._next[sender.address] = 0  # a stale cache, as after a restart elsewhere: nonce too low
    receipt = contracts.token.transfer(dev_accounts.spare[1].address, 1, sender=sender)  # resent, fresh nonce
    assert receipt["status"] == 1
    assert client.nonces._next[sender.address] == client.w3.eth.get_transaction_count(sender.address)


def test_unreachable_rpc_is_a_retryable_chain_error() -> None:
    client = ChainClient(f"http://127.0.0.1:{free_port()}", request_timeout=1.0)
    with pytest.raises(ChainError) as caught:
        client.block_number()
    assert caught.value.retryable and "unreachable" in str(caught.value)


def test_dev_keys_are_exactly_anvils_accounts(chain: ChainClient) -> None:
    """ANVIL_DEV_KEYS must be anvil's own accounts, in order: the off-chain refusal of dev keys outside the
    dev chain and `hashgrid up --providers N` (which funds the N-th key) rely on every one of them."""
    anvil_accounts = [a.lower() for a in chain.rpc("eth_accounts")]
    ours = [Account.from_key(key).address.lower() for key in ANVIL_DEV_KEYS]
    assert ours == anvil_accounts[: len(ours)]


def test_another_process_taking_the_nonce_does_not_fail_the_send(
    chain: ChainClient, contracts: Contracts, dev_accounts: DevAccounts
) -> None:
    """Two clients sign with one key (on a dev chain: the marketplace and `hashgrid faucet` or `dao`): the
    second one's send takes the nonce the first has cached; the first's next send is refused "nonce too low"
    by the node and goes out again with a fresh nonce instead of failing."""
    sender = dev_accounts.spare[2]
    contracts.token.transfer(sender.address, 10, sender=dev_accounts.deployer)
    contracts.client.send_transaction({"to": sender.address, "value": 10**18}, sender=dev_accounts.deployer)
    mine, other = ChainClient(chain.rpc_url), ChainClient(chain.rpc_url)
    mine.send_transaction({"to": dev_accounts.deployer.address, "value": 1}, sender=sender)  # caches n + 1
    other.send_transaction({"to": dev_accounts.deployer.address, "value": 1}, sender=sender)  # takes n + 1
    before = chain.w3.eth.get_transaction_count(sender.address)
    receipt = mine.send_transaction({"to": dev_accounts.deployer.address, "value": 1}, sender=sender)
    assert receipt["status"] == 1
    assert chain.w3.eth.get_transaction_count(sender.address) == before + 1
