"""Raw log decoding from the deployment's ABIs (topics and data by hand), so the indexer depends only on the
event signatures in `Deployment.abis`, not on the Python bindings.

Values are normalised for JSON: addresses lower-case, bytes as 0x hex, integers wider than 64 bits (token
amounts) as decimal strings, except `taskId`, which stays an int.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import event_abi_to_log_topic

from hashgrid.chain.deployment import Deployment

ESCROW = "TaskEscrow"
REGISTRY = "ProviderRegistry"
INDEXED_CONTRACTS = (ESCROW, REGISTRY)
# the argument that names the account an event is about (ChainEvent.account)
ACCOUNT_ARG = ("provider", "customer", "account")


@dataclass(frozen=True)
class DecodedEvent:
    """One decoded log, with its position on chain."""

    contract: str
    name: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int

    @property
    def task_id(self) -> int | None:
        value = self.args.get("taskId")
        return int(value) if value is not None else None

    @property
    def account(self) -> str | None:
        for key in ACCOUNT_ARG:
            if isinstance(self.args.get(key), str):
                return str(self.args[key])
        return None


def _hex(value: Any) -> str:
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


def _normalise(kind: str, name: str, value: Any) -> Any:
    if kind == "address":
        return str(value).lower()
    if kind.startswith("bytes"):
        return _hex(value)
    if kind.startswith(("uint", "int")):
        bits = int(kind.removeprefix("u").removeprefix("int") or 256)
        return int(value) if bits <= 64 or name == "taskId" else str(int(value))
    if kind == "bool":
        return bool(value)
    return value if isinstance(value, str | int) else str(value)


class EventDecoder:
    """Decodes the logs of the escrow and the registry of one deployment."""

    def __init__(self, deployment: Deployment, contracts: tuple[str, ...] = INDEXED_CONTRACTS) -> None:
        self.addresses: dict[str, str] = {}
        self._events: dict[tuple[str, bytes], dict[str, Any]] = {}
        for contract in contracts:
            address = deployment.address(contract).lower()
            self.addresses[address] = contract
            for item in deployment.abis[contract]:
                if item.get("type") == "event" and not item.get("anonymous"):
                    self._events[(address, bytes(event_abi_to_log_topic(item)))] = item  # type: ignore[arg-type]

    @property
    def address_list(self) -> list[str]:
        return list(self.addresses)

    def decode(self, log: Any) -> DecodedEvent | None:
        """The event of one raw log, or None for a log of another contract or an unknown event."""
        address = str(log["address"]).lower()
        topics = [bytes(t) if not isinstance(t, str) else bytes.fromhex(t.removeprefix("0x"))
                  for t in log.get("topics") or []]
        if not topics or address not in self.addresses:
            return None
        item = self._events.get((address, topics[0]))
        if item is None:
            return None
        inputs = item["inputs"]
        indexed = [i for i in inputs if i.get("indexed")]
        plain = [i for i in inputs if not i.get("indexed")]
        data = log.get("data") or b""
        data = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
        values = list(abi_decode([i["type"] for i in plain], data)) if plain else []
        args: dict[str, Any] = {}
        for spec, topic in zip(indexed, topics[1:], strict=False):
            (value,) = abi_decode([spec["type"]], topic)
            args[spec["name"]] = _normalise(spec["type"], spec["name"], value)
        for spec, value in zip(plain, values, strict=True):
            args[spec["name"]] = _normalise(spec["type"], spec["name"], value)
        return DecodedEvent(
            contract=self.addresses[address],
            name=str(item["name"]),
            args=args,
            block_number=int(log["blockNumber"]),
            block_hash=_hex(log["blockHash"]),
            tx_hash=_hex(log["transactionHash"]),
            log_index=int(log["logIndex"]),
        )
