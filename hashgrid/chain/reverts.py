"""Turn revert data into Python exceptions named after the contract's custom errors.

`error_class("EscrowRevealMismatch")` is a ContractRevert subclass made once per name, so callers write
`except error_class("EscrowRevealMismatch")` (or `except reverts.EscrowRevealMismatch`); Error(string) and
Panic(uint256) are decoded too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from hashgrid.errors import ContractRevert

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
PANIC_CODES = {
    0x00: "generic compiler panic",
    0x01: "assert failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array",
    0x31: "pop on empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an invalid internal function",
}
# Solidity enums travel as uint8; render the known ones by name (internalType "enum ITaskEscrow.TaskState").
ENUM_NAMES: dict[str, tuple[str, ...]] = {
    "TaskState": ("None", "Posted", "Assigned", "Settled", "Failed", "Cancelled", "Expired"),
    "ReplicaState": (
        "None",
        "Assigned",
        "Committed",
        "Revealed",
        "Agreed",
        "Dissented",
        "NoShow",
        "Released",
    ),
    "ProposalState": (
        "Pending",
        "Active",
        "Canceled",
        "Defeated",
        "Succeeded",
        "Queued",
        "Expired",
        "Executed",
    ),
}

_classes: dict[str, type[ContractRevert]] = {}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_class(name: str) -> type[ContractRevert]:
    """The exception class for the Solidity error `name`, created on first use and then always the same."""
    cls = _classes.get(name)
    if cls is None:
        cls = type(
            name,
            (ContractRevert,),
            {
                "code": f"revert_{_snake(name)}",
                "__module__": __name__,
                "__doc__": f"The contract reverted with {name}.",
            },
        )
        _classes[name] = cls
    return cls


def __getattr__(name: str) -> type[ContractRevert]:  # reverts.EscrowRevealMismatch
    if name[:1].isupper() and name.isidentifier():
        return error_class(name)
    raise AttributeError(name)


class PanicRevert(ContractRevert):
    code = "revert_panic"


class UnknownRevert(ContractRevert):
    code = "revert_unknown"


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param.get("components", []))
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


def _render(value: Any, param: dict[str, Any]) -> str:
    internal = str(param.get("internalType", ""))
    if internal.startswith("enum ") and isinstance(value, int):
        names = ENUM_NAMES.get(internal.rsplit(".", 1)[-1])
        if names and value < len(names):
            return f"{names[value]}({value})"
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if param["type"] == "address":
        return to_checksum_address(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_render(v, {"type": ""}) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


class RevertDecoder:
    """Knows every custom error of a set of ABIs (errors bubble across contracts, so use them all)."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]] = ()) -> None:
        self._errors: dict[bytes, dict[str, Any]] = {}
        for abi in abis:
            self.add_abi(abi)

    def add_abi(self, abi: list[dict[str, Any]]) -> None:
        for item in abi:
            if item.get("type") == "error":
                signature = f"{item['name']}({','.join(_abi_type(p) for p in item.get('inputs', []))})"
                self._errors[function_signature_to_4byte_selector(signature)] = item

    def decode(self, data: bytes | str | None, *, context: str = "") -> ContractRevert:
        """The exception for revert `data` (raw bytes or 0x-hex); `context` names the call for the message."""
        raw = _as_bytes(data)
        prefix = f"{context}: " if context else ""
        selector, body = raw[:4], raw[4:]
        if not raw:
            return UnknownRevert(f"{prefix}reverted without data")
        if selector == ERROR_STRING_SELECTOR:
            (reason,) = abi_decode(["string"], body)
            return error_class("Error")(
                f"{prefix}Error({reason!r})", error_name="Error", args={"reason": reason}
            )
        if selector == PANIC_SELECTOR:
            (code,) = abi_decode(["uint256"], body)
            meaning = PANIC_CODES.get(code, "unknown panic")
            return PanicRevert(
                f"{prefix}Panic(0x{code:02x}: {meaning})", error_name="Panic", args={"code": code}
            )
        item = self._errors.get(selector)
        if item is None:
            return UnknownRevert(
                f"{prefix}reverted with unknown error 0x{raw.hex()}",
                error_name="",
                args={"data": "0x" + raw.hex()},
            )
        inputs = item.get("inputs", [])
        values = abi_decode([_abi_type(p) for p in inputs], body) if inputs else ()
        args = {
            p["name"] or f"arg{i}": _normalize(v, p["type"])
            for i, (p, v) in enumerate(zip(inputs, values, strict=True))
        }
        rendered = ", ".join(
            f"{p['name'] or f'arg{i}'}={_render(v, p)}"
            for i, (p, v) in enumerate(zip(inputs, values, strict=True))
        )
        name = item["name"]
        return error_class(name)(f"{prefix}{name}({rendered})", error_name=name, args=args)


def _normalize(value: Any, abi_type: str) -> Any:
    """Checksummed addresses (eth_abi decodes them lower-case), recursively through arrays."""
    if abi_type == "address":
        return to_checksum_address(value)
    if abi_type.startswith("address[") and isinstance(value, (list, tuple)):
        return [to_checksum_address(v) for v in value]
    return value


def _as_bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    text = data.strip()
    return bytes.fromhex(text[2:] if text.startswith("0x") else text)
