"""One web3 client for every process that sends transactions: local signing, a nonce manager that lets
many threads send from one account without collisions, EIP-1559 fees, receipts waited with a timeout,
and reverts decoded (by simulating first) into the contracts' named errors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import requests
import requests.adapters
import requests.utils
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError
from web3.types import TxReceipt

from hashgrid.chain.reverts import RevertDecoder
from hashgrid.errors import ChainError, ContractRevert, InvalidInput, TransactionTimeout

GWEI = 10**9
RPC_POOL_SIZE = 32  # keep-alive connections per client: more than the threads of a process that send at once
Signer = LocalAccount | str  # an account or its private key

_CONNECTION_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)


class NonceLane(Protocol):
    """Where a client takes its nonces: this process's NonceManager, or a lane shared through Redis."""

    def reserve(self, address: str) -> AbstractContextManager[int]: ...

    def reset(self, address: str | None = None) -> None: ...


class NonceManager:
    """Hands out nonces per account. Sends from one account are serialised only while signing and sending
    (not while waiting for the receipt); a failed send forgets the cached nonce so the next one is read
    from the chain's pending count again."""

    def __init__(self, fetch: Callable[[str], int]) -> None:
        self._fetch = fetch
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._next: dict[str, int] = {}

    def _lock_for(self, address: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(address, threading.Lock())

    @contextmanager
    def reserve(self, address: str) -> Iterator[int]:
        """Yield the next nonce of `address`; it is consumed only if the block exits without an exception."""
        with self._lock_for(address):
            nonce = self._next.get(address)
            if nonce is None:
                nonce = self._fetch(address)
            try:
                yield nonce
            except BaseException:
                self._next.pop(address, None)
                raise
            self._next[address] = nonce + 1

    def reset(self, address: str | None = None) -> None:
        """Forget cached nonces (all, or one account's), e.g. after evm_revert rewound the chain."""
        with self._guard:
            if address is None:
                self._next.clear()
            else:
                self._next.pop(address, None)


@dataclass(frozen=True)
class BlockHeader:
    number: int
    hash: str  # 0x-prefixed, lowercase
    timestamp: int
    base_fee: int


def rpc_session(rpc_url: str) -> requests.Session:
    """One HTTP session for every thread of a client. The proxy settings are read from the environment once,
    here: by default requests re-reads them (walking os.environ) on every request, about a third of what a
    loopback RPC cost. The pool is sized for the threads of one process (API threadpool, job lanes)."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(rpc_url)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=RPC_POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class ChainClient:
    """web3.py over HTTP with local signing. `transact` is the one way Hashgrid sends a contract call."""

    def __init__(
        self,
        rpc_url: str,
        *,
        tx_timeout: float = 60.0,
        poll_interval: float = 0.05,
        request_timeout: float = 30.0,
        decoder: RevertDecoder | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.tx_timeout = tx_timeout
        self.poll_interval = poll_interval
        self.w3 = Web3(Web3.HTTPProvider(
            rpc_url, request_kwargs={"timeout": request_timeout}, session=rpc_session(rpc_url),
            # web3's validation middleware asks the node for its chain id before every call, estimate and
            # send (four round trips in a matching round); a node's chain id does not change
            cache_allowed_requests=True, cacheable_requests={"eth_chainId"},
        ))
        self.decoder = decoder or RevertDecoder()
        self.nonces: NonceLane = NonceManager(self._pending_nonce)
        self._chain_id: int | None = None

    # ------------------------------------------------------------------ basics
    @staticmethod
    def account(signer: Signer) -> LocalAccount:
        if isinstance(signer, str):
            try:
                return Account.from_key(signer)
            except (ValueError, TypeError) as exc:
                raise InvalidInput("not a valid private key") from exc
        return signer

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._guarded(lambda: self.w3.eth.chain_id))
        return self._chain_id

    def share_nonces(self, redis_url: str) -> None:
        """Take nonces from the one lane every process signing with the same keys shares (a Redis lock and
        counter, hashgrid/chain/nonce_lane.py), so Celery workers and the API never race for a nonce."""
        from hashgrid.chain.nonce_lane import RedisNonceLane

        self.nonces = RedisNonceLane(redis_url, self._pending_nonce, chain_id=self.chain_id)

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """A raw JSON-RPC call (anvil's evm_* / anvil_* methods); errors become ChainError."""
        response = self._guarded(lambda: self.w3.provider.make_request(method, params or []))  # type: ignore[arg-type]
        if "error" in response:
            raise ChainError(f"{method} failed: {response['error']}", method=method)
        return response.get("result")

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def timestamp(self, block: int | str = "latest") -> int:
        return self.header(block).timestamp

    def header(self, block: int | str = "latest") -> BlockHeader:
        """A block's hash, time and base fee, read raw: web3's block formatters cost more than the round trip
        (the indexer asks for two headers per run, every transaction for one)."""
        tag = hex(block) if isinstance(block, int) else block
        raw = self.rpc("eth_getBlockByNumber", [tag, False])
        if raw is None:
            raise ChainError(f"block {block} not found", block=str(block))
        return BlockHeader(number=int(raw["number"], 16), hash=raw["hash"].lower(),
                           timestamp=int(raw["timestamp"], 16),
                           base_fee=int(raw.get("baseFeePerGas") or hex(GWEI), 16))

    def _pending_nonce(self, address: str) -> int:
        return int(self._guarded(lambda: self.w3.eth.get_transaction_count(address, "pending")))  # type: ignore[arg-type]

    def _guarded(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _CONNECTION_ERRORS as exc:
            raise ChainError(
                f"RPC unreachable at {self.rpc_url}: {type(exc).__name__}", rpc_url=self.rpc_url
            ) from exc

    def fees(self) -> dict[str, int]:
        """EIP-1559 fees: twice the latest base fee plus a 1 gwei tip (anvil's base fee starts at 1 gwei)."""
        base = self.header("latest").base_fee
        tip = GWEI
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    # ------------------------------------------------------------------ calls and transactions
    def call(
        self, contract_fn: Any, *, sender: Signer | str | None = None, block: int | str = "latest"
    ) -> Any:
        """eth_call a contract function; a revert raises its named ContractRevert subclass."""
        tx: dict[str, Any] = {}
        if sender is not None:
            tx["from"] = (
                sender if isinstance(sender, str) and len(sender) == 42 else self.account(sender).address
            )
        try:
            return self._guarded(lambda: contract_fn.call(tx, block_identifier=block))
        except ContractLogicError as exc:
            raise self._decode(exc, contract_fn) from None

    def transact(
        self,
        contract_fn: Any,
        *,
        sender: Signer,
        value: int = 0,
        gas: int | None = None,
        simulate: bool = True,
        timeout: float | None = None,
    ) -> TxReceipt:
        """Simulate (so a revert is decoded without spending gas), sign, send and wait for the receipt. The
        call is ABI-encoded once: the estimate is made from the built transaction's data."""
        account = self.account(sender)
        fields = {"from": account.address, "value": value, "chainId": self.chain_id, **self.fees()}
        built = contract_fn.build_transaction({**fields, "gas": gas or 1})  # gas and fees given: no RPC here
        if simulate or gas is None:
            call = {k: built[k] for k in ("from", "to", "data", "value")}
            try:
                estimate = int(self._guarded(lambda: self.w3.eth.estimate_gas(call)))  # type: ignore[arg-type]
            except ContractLogicError as exc:
                raise self._decode(exc, contract_fn) from None
            gas = gas or estimate + estimate // 5 + 10_000
        built["gas"] = gas
        tx_hash = self._send_next(built, account)
        receipt = self.wait(tx_hash, timeout=timeout)
        if receipt["status"] != 1:
            raise self._replay_failure(built, receipt, contract_fn)
        return receipt

    def send_transaction(
        self, tx: dict[str, Any], *, sender: Signer, timeout: float | None = None
    ) -> TxReceipt:
        """Send a prepared transaction (e.g. a contract creation or a plain transfer) and wait for it."""
        account = self.account(sender)
        tx = {"from": account.address, "value": 0, "chainId": self.chain_id, **self.fees(), **tx}
        if "gas" not in tx:
            try:
                estimate = int(self._guarded(lambda: self.w3.eth.estimate_gas(tx)))  # type: ignore[arg-type]
            except ContractLogicError as exc:
                raise self._decode(exc, None) from None
            tx["gas"] = estimate + estimate // 5 + 10_000
        tx_hash = self._send_next(tx, account)
        receipt = self.wait(tx_hash, timeout=timeout)
        if receipt["status"] != 1:
            raise self._replay_failure(tx, receipt, None)
        return receipt

    def deploy(
        self, abi: list[dict[str, Any]], bytecode: str, *args: Any, sender: Signer
    ) -> tuple[str, TxReceipt]:
        """Deploy a contract; returns its address and the receipt."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        data = factory.constructor(*args).data_in_transaction
        receipt = self.send_transaction({"data": data}, sender=sender)
        address = receipt["contractAddress"]
        if not address:
            raise ChainError("contract creation returned no address")
        return str(address), receipt

    def _send_next(self, tx: dict[str, Any], account: LocalAccount, attempts: int = 3) -> HexBytes:
        """Send with the account's next nonce. Another process signing with the same key (a dev chain's
        deployer: the marketplace, the faucet, `hashgrid dao`) can take a nonce first; the node then says
        "nonce too low" without accepting the transaction, so it is sent again with a fresh nonce."""
        for attempt in range(attempts):
            try:
                with self.nonces.reserve(account.address) as nonce:  # an exception forgets the cached nonce
                    return self._send({**tx, "nonce": nonce}, account)
            except ChainError as exc:
                if "nonce too low" not in str(exc).lower() or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, tx: dict[str, Any], account: LocalAccount) -> HexBytes:
        signed = account.sign_transaction(tx)
        try:
            return HexBytes(self._guarded(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction)))
        except Web3RPCError as exc:
            raise ChainError(f"send failed: {exc}", sender=account.address) from exc

    def wait(self, tx_hash: HexBytes | str, *, timeout: float | None = None) -> TxReceipt:
        limit = self.tx_timeout if timeout is None else timeout
        try:
            return self._guarded(
                lambda: self.w3.eth.wait_for_transaction_receipt(
                    HexBytes(tx_hash), timeout=limit, poll_latency=self.poll_interval
                )
            )  # type: ignore[arg-type]
        except TimeExhausted as exc:
            raise TransactionTimeout(
                f"transaction {HexBytes(tx_hash).to_0x_hex()} not mined within {limit:g}s",
                tx_hash=HexBytes(tx_hash).to_0x_hex(),
                timeout=limit,
            ) from exc

    # ------------------------------------------------------------------ reverts
    def _decode(self, exc: ContractLogicError, contract_fn: Any) -> ContractRevert:
        context = getattr(contract_fn, "fn_name", "") if contract_fn is not None else ""
        data = exc.data if isinstance(exc.data, str) else None
        if data and data.startswith("0x") and len(data) >= 10:
            return self.decoder.decode(data, context=context)
        return ContractRevert(f"{context + ': ' if context else ''}{exc.message or exc}", error_name="")

    def _replay_failure(self, tx: dict[str, Any], receipt: TxReceipt, contract_fn: Any) -> ContractRevert:
        """A mined transaction failed (state changed since simulating, or out of gas): replay it for why."""
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)  # type: ignore[arg-type]
        except ContractLogicError as exc:
            return self._decode(exc, contract_fn)
        except Exception:  # noqa: BLE001 - the replay is only for a better message
            pass
        return ContractRevert(
            f"transaction {receipt['transactionHash'].to_0x_hex()} failed on chain "
            f"(gas used {receipt['gasUsed']})",
            error_name="",
        )
