"""FastAPI dependencies as `Annotated` aliases: settings, database session, content store, chain oracles
and the calling wallet (`CurrentWallet`), authenticated by a SIWE bearer token or an EIP-712 signature."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from sqlmodel import Session

from hashgrid.content import ContentStore
from hashgrid.signing import (
    HEADER_ADDRESS,
    HEADER_CHAIN_ID,
    HEADER_EXPIRY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
)
from marketplace.api.bodies import BodyInvalid, is_json_media_type, parse_json
from marketplace.api.chain import FeeOracle, StakeOracle
from marketplace.api.errors import Unauthorized
from marketplace.api.guard import limit_wallet
from marketplace.api.security import Caller, leave_nonce_pending, verify_signed_request, verify_token
from marketplace.settings import MarketplaceSettings


# The accessors below only read app.state: async so FastAPI calls them on the loop, not through a threadpool
# hop (~0.2 ms each under load).
async def get_settings(request: Request) -> MarketplaceSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request. Async only to skip a threadpool hop: opening one does no I/O (the connection is
    taken on first use, in whichever thread uses it) and closing it is a pool check-in."""
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


async def get_store(request: Request) -> ContentStore:
    return request.app.state.store  # type: ignore[no-any-return]


async def get_stake_oracle(request: Request) -> StakeOracle:
    return request.app.state.stake_oracle  # type: ignore[no-any-return]


async def get_fee_oracle(request: Request) -> FeeOracle:
    return request.app.state.fee_oracle  # type: ignore[no-any-return]


SettingsDep = Annotated[MarketplaceSettings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ContentStore, Depends(get_store)]
StakeOracleDep = Annotated[StakeOracle, Depends(get_stake_oracle)]
FeeOracleDep = Annotated[FeeOracle, Depends(get_fee_oracle)]


def signed_path(request: Request) -> str:
    """The path as signed: raw (still percent-encoded) path plus '?query' when present."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    query = request.scope.get("query_string", b"").decode("latin-1")
    return path + (f"?{query}" if query else "")


def authenticate(request: Request, settings: MarketplaceSettings, *, body_sha256: str | None) -> Caller:
    """Who signed this request (no database access: nonce spending is separate). `body_sha256` is given
    only when the body is not read here (blob uploads sign the blob's hash)."""
    headers = request.headers
    now = int(time.time())
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization must be 'Bearer <token>' (a token from POST /auth/siwe)")
        return verify_token(settings.keys, token.strip(), chain_id=settings.chain_id, now=now)
    signature = headers.get(HEADER_SIGNATURE)
    if not signature:
        raise Unauthorized(
            "unsigned request: sign it (EIP-712, X-Hashgrid-* headers) or send a bearer token "
            "from POST /auth/siwe; see docs/api.md"
        )
    missing = [name for name in (HEADER_ADDRESS, HEADER_NONCE, HEADER_EXPIRY) if not headers.get(name)]
    if missing:
        raise Unauthorized(f"signed request is missing {', '.join(missing)}", missing=missing)
    return verify_signed_request(
        address=headers[HEADER_ADDRESS],
        signature=signature,
        nonce=headers[HEADER_NONCE],
        expiry=headers[HEADER_EXPIRY],
        chain_id_header=headers.get(HEADER_CHAIN_ID),
        method=request.method,
        path=signed_path(request),
        body_sha256=body_sha256 or "0" * 64,
        chain_id=settings.chain_id,
        now=now,
        max_ttl_s=settings.max_signature_ttl_s,
    )


async def signed_caller(request: Request, settings: SettingsDep) -> Caller:
    """Authenticate a request whose body is part of the signature (read through the guard, which refuses it
    past the route's cap before more is read)."""
    body_sha256 = None
    if request.headers.get(HEADER_SIGNATURE) and not request.headers.get("authorization"):
        body_sha256 = hashlib.sha256(await request.body()).hexdigest()
    return authenticate(request, settings, body_sha256=body_sha256)


async def json_object_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (strict: bodies.parse_json), refused as FastAPI refuses a model body
    (422), for routes that take only the Request (POST /tasks)."""
    if not is_json_media_type(request.headers.get("content-type")):
        raise RequestValidationError(
            [{"type": "content_type", "loc": ("body",), "msg": "Content-Type must be application/json"}]
        )
    try:
        document = parse_json(await request.body())
    except BodyInvalid as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {exc.msg}", "input": {}}]
        ) from None
    if not isinstance(document, dict):
        raise RequestValidationError(
            [{"type": "dict_type", "loc": ("body",), "msg": "Input should be a valid dictionary"}]
        )
    return document


async def current_wallet(
    request: Request, caller: Annotated[Caller, Depends(signed_caller)], session: SessionDep
) -> str:
    """The caller's lower-case address. Its nonce is left pending on the request's session and spent by the
    endpoint's own thread (routing.py): committed at once for reads, with the handler's writes otherwise, so a
    refused request leaves nothing behind (a bearer token is checked for sign-out there too). On metered
    routes the wallet's rate limit is counted here. Async: it touches no database."""
    await limit_wallet(request, caller.address)
    leave_nonce_pending(session, caller, commit=request.method in ("GET", "HEAD"))
    return caller.address


CurrentWallet = Annotated[str, Depends(current_wallet)]
