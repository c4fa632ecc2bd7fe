"""Canonical JSON (RFC 8785) and sha256 helpers: every hash that two parties must agree on goes through here.

On chain, `specHash` and `resultHash` are the raw 32-byte sha256 of a document's canonical JSON (no keccak):
anyone can recompute them with any RFC 8785 implementation and `sha256sum`.
NOTE: RFC 8785 numbers are IEEE doubles, so integers beyond 2**53 (wei amounts) must travel as decimal
strings; `canonical_json` refuses them rather than rounding silently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import rfc8785

from hashgrid.errors import InvalidInput

CHUNK_SIZE = 1 << 20
SHA256_HEX_LEN = 64


_JCS_INT_MAX = 2**53 - 1  # RFC 8785 numbers are doubles: integers past this would round


class _NotPlain(Exception):
    """The document has something json.dumps would write differently from RFC 8785."""


def _plain(value: Any) -> Any:
    """`value` with integral floats as ints, when json.dumps(sort_keys) then writes exactly RFC 8785: ASCII
    keys (code point and UTF-16 orders agree), integers within ±(2**53-1), no other floats. Else _NotPlain."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if -_JCS_INT_MAX <= value <= _JCS_INT_MAX:
            return value
        raise _NotPlain
    if kind is float:
        if value.is_integer() and -_JCS_INT_MAX <= value <= _JCS_INT_MAX:
            return int(value)  # ES6 prints 1.0 as 1 (and -0.0 as 0)
        raise _NotPlain
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _NotPlain
            out[key] = _plain(item)
        return out
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    raise _NotPlain


def canonical_json(document: Any) -> bytes:
    """The RFC 8785 (JCS) bytes of a JSON-able document: sorted keys, no whitespace, UTF-8.

    Documents of the common shape (ASCII keys, integral numbers) go through the C json encoder, whose
    output is then byte-identical (tests/core/test_canonical.py checks it against rfc8785); the rest, and
    every refusal, through the rfc8785 package. Spec ingest hashes one per request, so this is hot."""
    try:
        text = json.dumps(_plain(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")
    except (_NotPlain, UnicodeEncodeError, RecursionError):
        pass
    try:
        return rfc8785.dumps(document)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:  # the latter: a lone surrogate key
        raise InvalidInput(f"cannot canonicalize document: {exc}") from exc


def sha256_bytes(data: bytes) -> bytes:
    """Raw 32-byte sha256 digest."""
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    """Lower-case hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: BinaryIO | Iterable[bytes]) -> tuple[str, int]:
    """Hex sha256 and byte count of a stream, read in chunks so large blobs never sit in memory."""
    digest = hashlib.sha256()
    size = 0
    if hasattr(stream, "read"):
        while chunk := stream.read(CHUNK_SIZE):  # type: ignore[union-attr]
            digest.update(chunk)
            size += len(chunk)
    else:
        for chunk in stream:
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> tuple[str, int]:
    """Hex sha256 and size of a file, streamed."""
    with path.open("rb") as handle:
        return sha256_stream(handle)


def hash_document(document: Any) -> bytes:
    """sha256 of a document's canonical JSON: the bytes32 used on chain."""
    return sha256_bytes(canonical_json(document))


def to_hex32(digest: bytes) -> str:
    """0x-prefixed hex of a 32-byte digest, the form web3 and the explorer print."""
    if len(digest) != 32:
        raise InvalidInput(f"expected a 32-byte digest, got {len(digest)} bytes")
    return "0x" + digest.hex()


def from_hex32(value: str) -> bytes:
    """Parse a 32-byte digest from hex, with or without 0x (also accepts a 'sha256:' prefix)."""
    text = value.removeprefix("sha256:").removeprefix("0x")
    if len(text) != SHA256_HEX_LEN:
        raise InvalidInput(f"expected 64 hex characters, got {len(text)}: {value!r}")
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise InvalidInput(f"not hex: {value!r}") from exc


def is_sha256_hex(value: str) -> bool:
    """True for exactly 64 lower-case hex characters."""
    return len(value) == SHA256_HEX_LEN and all(c in "0123456789abcdef" for c in value)
