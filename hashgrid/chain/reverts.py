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


# ---------------------------------------------------------------- in words


def _grid(wei: Any) -> str:
    value = int(wei)
    whole = f"{value / 10**18:,.6f}".rstrip("0").rstrip(".")
    return f"{whole} GRID"


def when(timestamp: Any, now: Any = None) -> str:
    """A unix time as a UTC date, with how far it is from `now` (chain time) when known."""
    import datetime

    moment = datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    if now is not None:
        left = int(timestamp) - int(now)
        text += f" (in {_duration(left)})" if left > 0 else f" ({_duration(-left)} ago)"
    return text


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    shown = " ".join(p for p in parts if p)
    return shown or f"{secs} s"


def _state(value: Any, enum: str) -> str:
    names = ENUM_NAMES[enum]
    return names[int(value)].lower() if 0 <= int(value) < len(names) else str(value)


def _states_bitmap(value: Any) -> str:
    names = ENUM_NAMES["ProposalState"]
    bits = int.from_bytes(value, "big") if isinstance(value, bytes) else int(value)
    return " or ".join(n.lower() for i, n in enumerate(names) if bits >> i & 1) or "another state"



# Solidity error name -> its arguments in a sentence a person acts on (amounts in GRID, times as dates)
WORDS: dict[str, Any] = {
    "EscrowTaskNotFound": lambda a: f"there is no task {a['taskId']} on chain",
    "EscrowTaskNotInState": lambda a: f"task {a['taskId']} is {_state(a['state'], 'TaskState')}, which does "
                                      "not allow this",
    "EscrowInvalidReplication": lambda a: f"replicas {a['replicas']}, quorum {a['quorum']}, max_replicas "
                                          f"{a['maxReplicas']} do not fit 1 <= quorum <= replicas <= "
                                          "max_replicas <= 16",
    "EscrowZeroPrice": lambda a: "max_price_per_replica must be above 0",
    "EscrowZeroSpecHash": lambda a: "the spec hash is zero",
    "EscrowDeadlineTooSoon": lambda a: f"the deadline {when(a['deadline'])} is before the earliest allowed "
                                       f"{when(a['earliest'])} (now plus the commit and reveal windows): "
                                       "raise deadline_s",
    "EscrowNotCustomer": lambda a: f"task {a['taskId']} is not a task of {a['caller']}",
    "EscrowProviderNotStaked": lambda a: f"provider {a['provider']} stakes below the minimum",
    "EscrowNotAssigned": lambda a: f"{a['caller']} holds no replica of task {a['taskId']}",
    "EscrowReplicaNotInState": lambda a: f"the replica of {a['provider']} on task {a['taskId']} is "
                                         f"{_state(a['state'], 'ReplicaState')}",
    "EscrowCommitWindowClosed": lambda a: f"the commit window of task {a['taskId']} closed at "
                                          f"{when(a['commitDeadline'], a['nowTime'])}",
    "EscrowRevealNotOpen": lambda a: f"reveals of task {a['taskId']} open at "
                                     f"{when(a['commitDeadline'], a['nowTime'])} or once every replica "
                                     "committed",
    "EscrowRevealWindowClosed": lambda a: f"the reveal window of task {a['taskId']} closed at "
                                          f"{when(a['revealDeadline'], a['nowTime'])}",
    "EscrowRevealsPending": lambda a: f"task {a['taskId']} waits for reveals until "
                                      f"{when(a['revealDeadline'], a['nowTime'])}",
    "EscrowNotExpired": lambda a: f"task {a['taskId']} can be expired only from "
                                  f"{when(a['expiresAt'], a['nowTime'])}",
    "EscrowNothingToClaim": lambda a: f"{a['account']} has nothing to claim",
    "RegistryZeroAmount": lambda a: "the amount must be above 0",
    "RegistryStakeBelowMinimum": lambda a: f"{a['provider']} stakes {_grid(a['stake'])}, below the minimum "
                                           f"{_grid(a['minimum'])}",
    "RegistryInsufficientStake": lambda a: f"{a['provider']} asked to unstake {_grid(a['requested'])} but "
                                           f"stakes only {_grid(a['available'])}",
    "RegistryStakeLocked": lambda a: f"{a['provider']} runs {a['activeAssignments']} assigned replica(s): "
                                     "its stake is locked until they finish",
    "RegistryNothingUnbonding": lambda a: f"nothing is unbonding for {a['provider']} (run `hashgrid provider "
                                          "unstake AMOUNT` first)",
    "RegistryUnbondingNotReleased": lambda a: f"the unbonding stake of {a['provider']} is released at "
                                              f"{when(a['releaseTime'], a['nowTime'])}; withdraw then",
    "ERC20InsufficientBalance": lambda a: f"{a['sender']} holds {_grid(a['balance'])} but "
                                          f"{_grid(a['needed'])} is needed",
    "ERC20InsufficientAllowance": lambda a: f"the allowance of {a['spender']} is {_grid(a['allowance'])} but "
                                            f"{_grid(a['needed'])} is needed",
    "ERC2612ExpiredSignature": lambda a: f"the permit expired at {when(a['deadline'])}",
    "GovernorInsufficientProposerVotes": lambda a: f"{a['proposer']} has {_grid(a['votes'])} of votes, the "
                                                   f"proposal threshold is {_grid(a['threshold'])} (delegate "
                                                   "first: `hashgrid dao delegate`)",
    "GovernorUnexpectedProposalState": lambda a: f"proposal {a['proposalId']} is "
                                                 f"{_state(a['current'], 'ProposalState')}, not "
                                                 f"{_states_bitmap(a['expectedStates'])}",
    "GovernorAlreadyCastVote": lambda a: f"{a['voter']} already voted on this proposal",
    "GovernorNonexistentProposal": lambda a: f"there is no proposal {a['proposalId']}",
}


def in_words(exc: ContractRevert) -> str:
    """A revert as a sentence, with the Solidity error's name in brackets; the raw message when unknown."""
    words = WORDS.get(exc.error_name)
    if words is not None:
        try:
            sentence = str(words(exc.error_args))
        except (KeyError, ValueError, TypeError, IndexError, OverflowError):
            return exc.message
        return f"{sentence} [{exc.error_name}]"
    return exc.message
