"""Wallet-signed requests to the marketplace, shared by the CLI, the provider daemon and the tests.

Two ways to authenticate (docs/api.md):
- EIP-712 signed requests: the wallet signs `Request{method, path, bodySha256, chainId, nonce, expiry}` in
  the domain {name: "Hashgrid Marketplace", version: "1", chainId}; the signature and its fields travel in
  X-Hashgrid-* headers. Every request carries a fresh nonce, so a captured request cannot be replayed.
- Sign-In with Ethereum (EIP-4361): sign one login message, get a short-lived bearer token.
`request_digest` is the exact 32-byte hash both sides compute; the server recomputes it from the request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import coincurve
import httpx
from sha3 import keccak_256

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount


def keccak(data: bytes) -> bytes:
    """keccak256 (Ethereum's 'sha3'). safe-pysha3 rather than eth_hash's pycryptodome backend: its four ctypes
    calls per hash each release the GIL, and a busy server thread then waits to get it back (~30 µs a hash
    under load instead of ~2)."""
    return bytes(keccak_256(data).digest())


DOMAIN_NAME = "Hashgrid Marketplace"
DOMAIN_VERSION = "1"
HEADER_ADDRESS = "X-Hashgrid-Address"
HEADER_SIGNATURE = "X-Hashgrid-Signature"
HEADER_NONCE = "X-Hashgrid-Nonce"
HEADER_EXPIRY = "X-Hashgrid-Expiry"
HEADER_CHAIN_ID = "X-Hashgrid-Chain-Id"
DEFAULT_TTL_S = 120
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

REQUEST_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
    ],
    "Request": [
        {"name": "method", "type": "string"},
        {"name": "path", "type": "string"},
        {"name": "bodySha256", "type": "bytes32"},
        {"name": "chainId", "type": "uint256"},
        {"name": "nonce", "type": "string"},
        {"name": "expiry", "type": "uint256"},
    ],
}
_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId)")
_REQUEST_TYPEHASH = keccak(
    b"Request(string method,string path,bytes32 bodySha256,uint256 chainId,string nonce,uint256 expiry)"
)
_domain_cache: dict[int, bytes] = {}


def domain_separator(chain_id: int) -> bytes:
    """hashStruct(EIP712Domain) for a chain (cached: it is the same for every request)."""
    separator = _domain_cache.get(chain_id)
    if separator is None:
        separator = keccak(
            _DOMAIN_TYPEHASH
            + keccak(DOMAIN_NAME.encode())
            + keccak(DOMAIN_VERSION.encode())
            + chain_id.to_bytes(32, "big")
        )
        _domain_cache[chain_id] = separator
    return separator


def request_path(url: str | httpx.URL) -> str:
    """What is signed as `path`: the URL path plus '?query' when there is one (the raw, encoded form)."""
    parts = urlsplit(str(url))
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


@lru_cache(maxsize=4096)
def _keccak_text(text: str) -> bytes:
    """keccak of a method or path: a server sees few distinct ones, and each keccak costs ~15 µs."""
    return keccak(text.encode())


def request_digest(
    *, method: str, path: str, body_sha256: str, chain_id: int, nonce: str, expiry: int
) -> bytes:
    """The EIP-712 digest keccak(0x1901 ‖ domainSeparator ‖ hashStruct(Request)) of one request."""
    body = bytes.fromhex(body_sha256.removeprefix("0x"))
    if len(body) != 32:
        raise ValueError("bodySha256 must be 32 bytes")
    struct = keccak(
        _REQUEST_TYPEHASH
        + _keccak_text(method.upper())
        + _keccak_text(path)
        + body
        + chain_id.to_bytes(32, "big")
        + keccak(nonce.encode())
        + expiry.to_bytes(32, "big")
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id) + struct)


def typed_data(
    *, method: str, path: str, body_sha256: str, chain_id: int, nonce: str, expiry: int
) -> dict[str, object]:
    """The same request as an eth_signTypedData_v4 document (what a browser wallet is asked to sign)."""
    return {
        "types": REQUEST_TYPES,
        "primaryType": "Request",
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        "message": {
            "method": method.upper(),
            "path": path,
            "bodySha256": "0x" + body_sha256.removeprefix("0x"),
            "chainId": chain_id,
            "nonce": nonce,
            "expiry": expiry,
        },
    }


def new_nonce() -> str:
    """A fresh request nonce: 128 random bits as 32 hex characters."""
    return secrets.token_hex(16)


class KeySigner:
    """A raw private key that signs digests with libsecp256k1 (coincurve): the same 65-byte r‖s‖v signatures
    as eth-account's `unsafe_sign_hash` (RFC 6979, low s), without importing eth-account and web3 (half a
    second of a command's start)."""

    def __init__(self, private_key: str | bytes) -> None:
        raw = bytes.fromhex(private_key.removeprefix("0x")) if isinstance(private_key, str) else private_key
        if len(raw) != 32:
            raise ValueError("a private key is 32 bytes")
        self._key = coincurve.PrivateKey(raw)  # raises ValueError for 0 or a value past the curve order
        public = self._key.public_key.format(compressed=False)[1:]
        self.address = checksum_address(keccak(public)[-20:].hex())

    def sign_digest(self, digest: bytes) -> bytes:
        signature = self._key.sign_recoverable(digest, hasher=None)
        return signature[:64] + bytes([signature[64] + 27])


def checksum_address(hex40: str) -> str:
    """EIP-55 mixed-case address from 40 hex characters."""
    lower = hex40.lower().removeprefix("0x")
    hashed = keccak(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(hashed[i], 16) >= 8 else c for i, c in enumerate(lower))


def _account(key: LocalAccount | KeySigner | str) -> LocalAccount | KeySigner:
    return KeySigner(key) if isinstance(key, str) else key


def _sign_digest(account: LocalAccount | KeySigner, digest: bytes) -> bytes:
    if isinstance(account, KeySigner):
        return account.sign_digest(digest)
    return bytes(account.unsafe_sign_hash(digest).signature)  # type: ignore[arg-type]


def sign_request(
    key: LocalAccount | KeySigner | str,
    *,
    method: str,
    url: str | httpx.URL,
    body: bytes = b"",
    chain_id: int,
    nonce: str | None = None,
    expiry: int | None = None,
    body_sha256: str | None = None,
    ttl_s: int = DEFAULT_TTL_S,
) -> dict[str, str]:
    """The X-Hashgrid-* headers authenticating one request. `body_sha256` may be given instead of `body`
    (a blob upload signs the blob's hash without holding the blob in memory)."""
    account = _account(key)
    nonce = nonce or new_nonce()
    expiry = expiry if expiry is not None else int(time.time()) + ttl_s
    body_hash = body_sha256 or hashlib.sha256(body).hexdigest()
    digest = request_digest(
        method=method,
        path=request_path(url),
        body_sha256=body_hash,
        chain_id=chain_id,
        nonce=nonce,
        expiry=expiry,
    )
    signature = _sign_digest(account, digest).hex()
    return {
        HEADER_ADDRESS: account.address,
        HEADER_SIGNATURE: "0x" + signature,
        HEADER_NONCE: nonce,
        HEADER_EXPIRY: str(expiry),
        HEADER_CHAIN_ID: str(chain_id),
    }


class HashgridAuth(httpx.Auth):
    """httpx auth that signs every request (EIP-712) with a wallet key.

    Streaming bodies cannot be hashed before sending: pass the blob's sha256 as `X-Hashgrid-Body-Sha256`
    on such a request (the server checks the stream against it), as `MarketplaceClient.upload` does.
    """

    requires_request_body = True

    def __init__(self, key: LocalAccount | KeySigner | str, *, chain_id: int,
                 ttl_s: int = DEFAULT_TTL_S) -> None:
        self.account = _account(key)
        self.chain_id = chain_id
        self.ttl_s = ttl_s

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        declared = request.headers.pop("X-Hashgrid-Body-Sha256", None)
        body = b"" if declared else request.content
        request.headers.update(
            sign_request(
                self.account,
                method=request.method,
                url=request.url,
                body=body,
                body_sha256=declared,
                chain_id=self.chain_id,
                ttl_s=self.ttl_s,
            )
        )
        yield request


class BearerAuth(httpx.Auth):
    """httpx auth with a SIWE session token from POST /auth/siwe."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


# ------------------------------------------------------------------ Sign-In with Ethereum (EIP-4361)
@dataclass(frozen=True)
class SiweLogin:
    message: str
    signature: str


def siwe_message(
    *,
    address: str,
    domain: str,
    uri: str,
    chain_id: int,
    nonce: str,
    statement: str = "Sign in to the Hashgrid marketplace.",
    ttl_s: int = 600,
    issued_at: datetime | None = None,
) -> str:
    """An EIP-4361 message text (built with the `siwe` package so the server parses exactly this)."""
    from siwe import SiweMessage

    issued = issued_at or datetime.now(UTC)
    message = SiweMessage(
        domain=domain,
        address=address,
        statement=statement,
        uri=uri,
        version="1",
        chain_id=chain_id,
        nonce=nonce,
        issued_at=issued.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        expiration_time=(issued + timedelta(seconds=ttl_s)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    )
    return message.prepare_message()


def sign_siwe(
    key: LocalAccount | str, *, domain: str, uri: str, chain_id: int, nonce: str, ttl_s: int = 600
) -> SiweLogin:
    """A signed SIWE login for `key` (EIP-191 personal_sign over the message text)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    account = Account.from_key(key) if isinstance(key, str) else key
    text = siwe_message(
        address=account.address, domain=domain, uri=uri, chain_id=chain_id, nonce=nonce, ttl_s=ttl_s
    )
    signature = account.sign_message(encode_defunct(text=text)).signature.hex()
    return SiweLogin(text, signature if signature.startswith("0x") else "0x" + signature)


def siwe_login(client: httpx.Client, key: LocalAccount | str, *, chain_id: int, ttl_s: int = 600) -> str:
    """Log in with SIWE against a marketplace client and return the bearer token."""
    nonce = client.get("/auth/nonce").raise_for_status().json()["nonce"]
    base = urlsplit(str(client.base_url))
    login = sign_siwe(
        key,
        domain=base.netloc,
        uri=f"{base.scheme}://{base.netloc}",
        chain_id=chain_id,
        nonce=nonce,
        ttl_s=ttl_s,
    )
    response = client.post("/auth/siwe", json={"message": login.message, "signature": login.signature})
    return str(response.raise_for_status().json()["token"])
