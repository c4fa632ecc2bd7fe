"""Server side of authentication: EIP-712 signed requests, SIWE logins and the session tokens they yield.

Pure checks (no database) live here; spending a nonce is `consume_nonce`, done in the same transaction as
the request's writes so a refused request stores nothing, and a replayed nonce is refused by a primary key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete

from hashgrid.signing import keccak, request_digest
from marketplace.api.errors import NonceReused, SignatureExpired, Unauthorized, WrongChain
from marketplace.models import RevokedToken, UsedNonce

try:  # libsecp256k1 bindings recover a key ~10x faster than pure Python (eth_keys falls back)
    import coincurve
except ImportError:  # pragma: no cover
    coincurve = None  # type: ignore[assignment]

TOKEN_PREFIX = "hg2"
LOGIN_NONCE_TTL_S = 600
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{8,96}$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class Caller:
    """Who made a request and, for a signed request, the nonce to spend (None for a session token)."""

    address: str  # lower-case 0x address
    scheme: str  # "eip712" or "bearer"
    nonce: str | None = None
    expiry: int | None = None
    token_id: str | None = None  # a bearer token's id (revocable)


def recover_address(digest: bytes, signature_hex: str) -> str:
    """The lower-case address whose key made a 65-byte (r, s, v) signature over a 32-byte digest."""
    try:
        signature = bytes.fromhex(signature_hex.removeprefix("0x"))
    except ValueError:
        raise Unauthorized("signature is not hex") from None
    if len(signature) != 65:
        raise Unauthorized(f"signature must be 65 bytes, got {len(signature)}")
    v = signature[64] - 27 if signature[64] >= 27 else signature[64]
    if v not in (0, 1):
        raise Unauthorized(f"signature recovery id v={signature[64]} is not 27/28 (or 0/1)")
    try:
        if coincurve is not None:
            public = coincurve.PublicKey.from_signature_and_message(
                signature[:64] + bytes([v]), digest, hasher=None
            )
            raw = public.format(compressed=False)[1:]
        else:  # pragma: no cover
            from eth_keys import keys

            sig = keys.Signature(signature_bytes=signature[:64] + bytes([v]))
            raw = sig.recover_public_key_from_msg_hash(digest).to_bytes()
    except Exception as exc:  # malformed r/s: the library's error type differs per backend
        raise Unauthorized(f"signature does not recover to a key: {exc}") from None
    return _address_of(raw)


@lru_cache(maxsize=4096)
def _address_of(public_key: bytes) -> str:
    """The address of a 64-byte public key (cached: the same wallets sign request after request)."""
    return "0x" + keccak(public_key)[-20:].hex()


def verify_signed_request(
    *,
    address: str,
    signature: str,
    nonce: str,
    expiry: str,
    chain_id_header: str | None,
    method: str,
    path: str,
    body_sha256: str,
    chain_id: int,
    now: int,
    max_ttl_s: int,
) -> Caller:
    """Check one EIP-712 signed request: address, chain, nonce form, expiry window, then the signature."""
    if not _ADDRESS_RE.match(address):
        raise Unauthorized(f"X-Hashgrid-Address must be a 0x address of 40 hex characters, got {address!r}")
    if chain_id_header is not None and chain_id_header != str(chain_id):
        raise WrongChain(
            f"request signed for chain {chain_id_header}, this marketplace serves chain {chain_id}",
            expected=chain_id,
            got=chain_id_header,
        )
    if not _NONCE_RE.match(nonce):
        raise Unauthorized("X-Hashgrid-Nonce must be 8-96 characters of letters, digits, '-' or '_'")
    if not expiry.isdigit() or len(expiry) > 12:
        raise Unauthorized(f"X-Hashgrid-Expiry must be unix seconds, got {expiry!r}")
    expires = int(expiry)
    if expires <= now:
        raise SignatureExpired(f"signature expired at {expires}, it is {now}", expiry=expires, now=now)
    if expires > now + max_ttl_s:
        raise Unauthorized(
            f"signature expiry {expires} is more than {max_ttl_s} s ahead; sign with a shorter expiry",
            expiry=expires,
            max_ttl_s=max_ttl_s,
        )
    digest = request_digest(
        method=method, path=path, body_sha256=body_sha256, chain_id=chain_id, nonce=nonce, expiry=expires
    )
    signer = recover_address(digest, signature)
    if signer != address.lower():
        raise Unauthorized(
            f"signature was not made by {address} for this request (method, path, body, chain "
            f"{chain_id}, nonce, expiry); it recovers to {signer}",
            recovered=signer,
        )
    return Caller(address=signer, scheme="eip712", nonce=nonce, expiry=expires)


_INSERT_NONCE = insert(UsedNonce.__table__)  # type: ignore[attr-defined]
_INSERT_REVOKED = insert(RevokedToken.__table__)  # type: ignore[attr-defined]


def consume_nonce(session: Session, *, address: str, nonce: str, expiry: int, commit: bool) -> None:
    """Spend a nonce in the session's transaction (flush now so a replay fails before any other write)."""
    values = {"address": address, "nonce": nonce, "expires_at": datetime.fromtimestamp(expiry, UTC)}
    try:
        session.execute(_INSERT_NONCE, values)
        if commit:
            session.commit()
    except IntegrityError:
        session.rollback()
        raise NonceReused(
            f"nonce {nonce!r} of {address} was already used: the request is a replay",
            address=address,
            nonce=nonce,
        ) from None


PENDING_NONCE = "hashgrid.pending_nonce"  # session.info key: (address, nonce, expiry, commit at once)


PENDING_TOKEN = "hashgrid.pending_token"  # session.info key: a bearer token id to check for sign-out


def leave_nonce_pending(session: Session, caller: Caller, *, commit: bool) -> None:
    """Mark the request's nonce to be spent (or its bearer token to be checked for sign-out) by whoever runs
    the handler's database work (routing.py), in that thread and transaction: no connection is taken on the
    event loop or held across a thread hop."""
    if caller.nonce is not None and caller.expiry is not None:
        session.info[PENDING_NONCE] = (caller.address, caller.nonce, caller.expiry, commit)
    if caller.token_id is not None:
        session.info[PENDING_TOKEN] = caller.token_id


def spend_pending_nonce(session: Session) -> None:
    """Spend the nonce `leave_nonce_pending` marked, if any (NonceReused for a replay); refuse a signed-out
    bearer token."""
    token_id = session.info.pop(PENDING_TOKEN, None)
    if token_id is not None:
        check_revoked(session, token_id)
    pending = session.info.pop(PENDING_NONCE, None)
    if pending is not None:
        address, nonce, expiry, commit = pending
        consume_nonce(session, address=address, nonce=nonce, expiry=expiry, commit=commit)


def purge_expired_nonces(session: Session, *, now: datetime) -> int:
    """Forget spent nonces whose signatures expired, and signed-out tokens that expired: both are refused for
    expiry anyway."""
    result = session.exec(delete(UsedNonce).where(col(UsedNonce.expires_at) < now))  # type: ignore[call-overload]
    session.exec(delete(RevokedToken).where(col(RevokedToken.expires_at) < now))  # type: ignore[call-overload]
    session.commit()
    return int(result.rowcount or 0)


# ------------------------------------------------------------------ session tokens (after SIWE)
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(secret: bytes) -> str:
    """A public name for a secret (8 hex characters), so a token says which key signed it."""
    return hashlib.sha256(b"hashgrid-token-key:" + secret).hexdigest()[:8]


@dataclass(frozen=True)
class KeyRing:
    """The secret that signs new tokens and login nonces, and retired ones still accepted until what they
    signed expires (rotation without logging everyone out)."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    def by_id(self, kid: str) -> bytes | None:
        return next((key for key in self.all if hmac.compare_digest(key_id(key), kid)), None)

    @property
    def all(self) -> tuple[bytes, ...]:
        return (self.current, *self.previous)


def _mac(secret: bytes, text: str) -> str:
    return _b64(hmac.new(secret, text.encode(), hashlib.sha256).digest())


def issue_token(keys: KeyRing, *, address: str, chain_id: int, expires: int, now: int) -> tuple[str, str]:
    """(`hg2.<kid>.<payload>.<mac>`, its id). payload = address.chainId.expiry.issuedAt.tokenId; the id is 128
    random bits, so two sign-ins never yield the same token and one can be revoked alone."""
    token_id = secrets.token_hex(16)
    payload = _b64(f"{address.lower()}.{chain_id}.{expires}.{now}.{token_id}".encode())
    signed = f"{TOKEN_PREFIX}.{key_id(keys.current)}.{payload}"
    return f"{signed}.{_mac(keys.current, signed)}", token_id


def verify_token(keys: KeyRing, token: str, *, chain_id: int, now: int) -> Caller:
    """Check a token's key, MAC, chain and expiry (sign-out is checked in the database: `check_revoked`)."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != TOKEN_PREFIX:
        raise Unauthorized(f"bearer token is malformed (expected {TOKEN_PREFIX}.<kid>.<payload>.<mac> from "
                           "POST /auth/siwe)")
    key = keys.by_id(parts[1])
    if key is None:
        raise Unauthorized("bearer token's key is no longer accepted here; sign in again", kid=parts[1][:16])
    if not hmac.compare_digest(_mac(key, ".".join(parts[:3])), parts[3]):
        raise Unauthorized("bearer token signature is invalid")
    try:
        address, token_chain, expires, _issued, token_id = _unb64(parts[2]).decode().split(".")
        token_chain_id, expires_at = int(token_chain), int(expires)
    except ValueError:
        raise Unauthorized("bearer token payload is malformed") from None
    if token_chain_id != chain_id:
        raise WrongChain(
            f"token was issued for chain {token_chain_id}, this marketplace serves chain {chain_id}"
        )
    if expires_at <= now:
        raise SignatureExpired(f"bearer token expired at {expires_at}; sign in again", expiry=expires_at)
    return Caller(address=address, scheme="bearer", expiry=expires_at, token_id=token_id)


def revoke_token(session: Session, caller: Caller) -> None:
    """Sign-out: the token is refused from now on (its row lives until the token would have expired)."""
    assert caller.token_id is not None and caller.expiry is not None
    session.execute(
        _INSERT_REVOKED,
        {"token_id": caller.token_id, "address": caller.address,
         "expires_at": datetime.fromtimestamp(caller.expiry, UTC)},
    )


def check_revoked(session: Session, token_id: str) -> None:
    """Unauthorized if the token was signed out."""
    if session.get(RevokedToken, token_id) is not None:
        raise Unauthorized("bearer token was signed out; sign in again")


def check_token(engine: Engine, token_id: str) -> None:
    """`check_revoked` on a session of its own (for async routes that hold none)."""
    with Session(engine) as session:
        check_revoked(session, token_id)


# ------------------------------------------------------------------ SIWE login nonces (stateless until used)
def login_nonce(keys: KeyRing, *, now: int) -> str:
    """A login nonce that proves the server issued it and when: <time hex><random><mac>, alphanumeric."""
    body = f"{now:010x}{secrets.token_hex(8)}"
    return body + hmac.new(keys.current, body.encode(), hashlib.sha256).hexdigest()[:16]


def check_login_nonce(keys: KeyRing, nonce: str, *, now: int) -> int:
    """Verify a nonce came from `login_nonce` within LOGIN_NONCE_TTL_S; return when it expires."""
    if len(nonce) != 42 or not all(c in "0123456789abcdef" for c in nonce):
        raise Unauthorized("SIWE nonce was not issued by this marketplace (get one from GET /auth/nonce)")
    body, mac = nonce[:26], nonce[26:]
    macs = [hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:16] for key in keys.all]
    if not any(hmac.compare_digest(expected, mac) for expected in macs):
        raise Unauthorized("SIWE nonce was not issued by this marketplace (get one from GET /auth/nonce)")
    issued = int(body[:10], 16)
    if issued + LOGIN_NONCE_TTL_S <= now:
        raise SignatureExpired(f"SIWE nonce expired {now - issued - LOGIN_NONCE_TTL_S} s ago; get a new one")
    return issued + LOGIN_NONCE_TTL_S


@dataclass(frozen=True)
class SiweResult:
    address: str
    nonce: str
    nonce_expiry: int
    expires: int  # the session's end: the message's expiration time, capped by the token TTL


def verify_siwe(
    message: str, signature: str, *, keys: KeyRing, chain_id: int, domain: str, now: int, token_ttl_s: int
) -> SiweResult:
    """Parse and check an EIP-4361 message: domain, chain, our nonce, time window, then the signature."""
    from siwe import SiweMessage, VerificationError

    try:
        parsed = SiweMessage.from_message(message)
    except Exception as exc:  # the parser raises several types for malformed text
        raise Unauthorized(f"not a valid EIP-4361 (SIWE) message: {exc}") from None
    if parsed.chain_id != chain_id:
        raise WrongChain(
            f"SIWE message is for chain {parsed.chain_id}, this marketplace serves chain {chain_id}"
        )
    if parsed.domain != domain:
        raise Unauthorized(f"SIWE message is for domain {parsed.domain!r}, expected {domain!r}")
    nonce_expiry = check_login_nonce(keys, parsed.nonce, now=now)
    try:
        parsed.verify(signature, timestamp=datetime.fromtimestamp(now, UTC))
    except VerificationError as exc:
        reason = type(exc).__name__
        if reason == "ExpiredMessage":
            raise SignatureExpired("SIWE message has expired") from None
        raise Unauthorized(f"SIWE verification failed: {reason}") from None
    except Exception as exc:  # malformed signatures surface as ValueError/TypeError from eth_account
        raise Unauthorized(f"SIWE signature is malformed: {exc}") from None
    expires = now + token_ttl_s
    if parsed.expiration_time is not None:
        expires = min(
            expires,
            int(datetime.fromisoformat(str(parsed.expiration_time).replace("Z", "+00:00")).timestamp()),
        )
    return SiweResult(
        address=str(parsed.address).lower(), nonce=parsed.nonce, nonce_expiry=nonce_expiry, expires=expires
    )
