"""Sign-In with Ethereum: get a login nonce, sign an EIP-4361 message, get a short-lived bearer token; sign
out to revoke it."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Response

from marketplace.api.deps import SessionDep, SettingsDep, signed_caller
from marketplace.api.errors import Unauthorized, error_responses
from marketplace.api.routing import Router
from marketplace.api.schemas import NonceOut, SiweLoginIn, TokenOut
from marketplace.api.security import (
    LOGIN_NONCE_TTL_S,
    Caller,
    check_revoked,
    consume_nonce,
    issue_token,
    login_nonce,
    revoke_token,
    verify_siwe,
)

router = Router(prefix="/auth", tags=["auth"])


@router.get(
    "/nonce",
    response_model=NonceOut,
    summary="A fresh nonce for a SIWE login message",
    responses=error_responses(429),
)
def get_nonce(settings: SettingsDep, response: Response) -> NonceOut:
    now = int(time.time())
    response.headers["Cache-Control"] = "no-store"
    return NonceOut(nonce=login_nonce(settings.keys, now=now), expires=now + LOGIN_NONCE_TTL_S)


@router.post(
    "/siwe",
    response_model=TokenOut,
    summary="Log in with a signed EIP-4361 message",
    responses=error_responses(401, 408, 413, 422, 429),
)
def siwe_login(body: SiweLoginIn, settings: SettingsDep, session: SessionDep) -> TokenOut:
    """The message must name this marketplace's domain and chain and a nonce from GET /auth/nonce; each
    nonce logs in once. The token lasts until the message's expiration time or `token_ttl_s`, if sooner; every
    login yields a new token (its own id), revocable with POST /auth/signout."""
    now = int(time.time())
    result = verify_siwe(
        body.message,
        body.signature,
        keys=settings.keys,
        chain_id=settings.chain_id,
        domain=settings.login_domain,
        now=now,
        token_ttl_s=settings.token_ttl_s,
    )
    consume_nonce(
        session, address=result.address, nonce=result.nonce, expiry=result.nonce_expiry, commit=True
    )
    token, _ = issue_token(
        settings.keys, address=result.address, chain_id=settings.chain_id, expires=result.expires, now=now
    )
    return TokenOut(token=token, address=result.address, expires=result.expires)


@router.post(
    "/signout",
    status_code=204,
    summary="Revoke the bearer token this request carries",
    responses=error_responses(401, 408, 413, 429),
)
def signout(caller: Annotated[Caller, Depends(signed_caller)], session: SessionDep) -> Response:
    """The token is refused from then on, by every replica (the revocation is in the database)."""
    if caller.token_id is None:
        raise Unauthorized("sign-out needs the bearer token to revoke (Authorization: Bearer <token>)")
    check_revoked(session, caller.token_id)
    revoke_token(session, caller)
    return Response(status_code=204)
