"""Sign-In with Ethereum: get a login nonce, sign an EIP-4361 message, get a short-lived bearer token."""

from __future__ import annotations

import time

from marketplace.api.deps import SessionDep, SettingsDep
from marketplace.api.errors import error_responses
from marketplace.api.routing import Router
from marketplace.api.schemas import NonceOut, SiweLoginIn, TokenOut
from marketplace.api.security import (
    LOGIN_NONCE_TTL_S,
    consume_nonce,
    issue_token,
    login_nonce,
    verify_siwe,
)

router = Router(prefix="/auth", tags=["auth"])


@router.get("/nonce", response_model=NonceOut, summary="A fresh nonce for a SIWE login message")
def get_nonce(settings: SettingsDep) -> NonceOut:
    now = int(time.time())
    return NonceOut(nonce=login_nonce(settings.secret, now=now), expires=now + LOGIN_NONCE_TTL_S)


@router.post(
    "/siwe",
    response_model=TokenOut,
    summary="Log in with a signed EIP-4361 message",
    responses=error_responses(401, 422),
)
def siwe_login(body: SiweLoginIn, settings: SettingsDep, session: SessionDep) -> TokenOut:
    """The message must name this marketplace's domain and chain and a nonce from GET /auth/nonce; each
    nonce logs in once. The token lasts until the message's expiration time or `token_ttl_s`, if sooner."""
    result = verify_siwe(
        body.message,
        body.signature,
        secret=settings.secret,
        chain_id=settings.chain_id,
        domain=settings.login_domain,
        now=int(time.time()),
        token_ttl_s=settings.token_ttl_s,
    )
    consume_nonce(
        session, address=result.address, nonce=result.nonce, expiry=result.nonce_expiry, commit=True
    )
    token = issue_token(
        settings.secret, address=result.address, chain_id=settings.chain_id, expires=result.expires
    )
    return TokenOut(token=token, address=result.address, expires=result.expires)
