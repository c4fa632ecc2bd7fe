"""The marketplace's own settings on top of the shared `Settings`: auth secret, limits, timeouts.

Fails fast: outside the dev chain a real `HASHGRID_AUTH_SECRET` (32+ characters) is required, so a
deployment can never run on the publicly known development secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import model_validator

from hashgrid.config import DEV_CHAIN_ID, Settings
from marketplace.api.ratelimit import Rule

if TYPE_CHECKING:
    from marketplace.api.security import KeyRing

# DEV-ONLY: the HMAC secret for session tokens on the dev chain (31337) when none is configured.
DEV_AUTH_SECRET = "hashgrid-dev-only-insecure-auth-secret-31337"
MIB = 1024 * 1024


class MarketplaceSettings(Settings):
    """Knobs of the marketplace API (env HASHGRID_*)."""

    auth_secret: str | None = None  # HMAC key of SIWE session tokens (and login nonces)
    auth_previous_secrets: list[str] = []  # still accepted until their tokens expire (rotation)
    token_ttl_s: int = 3600  # session token lifetime (capped by the SIWE message's expiration)
    max_signature_ttl_s: int = 600  # a signed request's expiry may be at most this far ahead
    max_blob_bytes: int = 64 * MIB
    max_body_bytes: int = 1 * MIB  # JSON request bodies (every POST but the login)
    max_login_bytes: int = 32 * 1024  # POST /auth/siwe (a 4,096-character message, JSON-escaped)
    max_log_bytes: int = 4 * MIB  # a provider's log chunk: 256 Ki characters, each up to 12 bytes escaped
    max_header_bytes: int = 64 * 1024  # request line and headers of one request
    header_timeout_s: float = 10.0  # a connection's next request head must arrive within this
    body_read_timeout_s: float = 15.0  # at most this long between two pieces of a request body
    body_timeout_s: float = 120.0  # a whole request body, from the first read
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 2048  # open connections per server process; more are answered 503 and closed
    max_connections_per_ip: int = 256  # open connections from one client address
    # rate limits: "<requests>/<seconds>" sustained, a burst of <requests>; "off" turns one off
    rate_limit_ip: str = "1000/10"  # per client address: mutating and expensive routes
    rate_limit_wallet: str = "300/10"  # per signed wallet: mutating and expensive routes
    rate_limit_login: str = "30/60"  # per client address: GET /auth/nonce, POST /auth/siwe
    rate_limit_read: str = "3000/10"  # per client address: every other read but /health
    max_streams_per_wallet: int = 8  # open SSE follows and long-polls of one wallet, per server process
    rate_limit_redis_url: str | None = None  # default: redis_url; none: each process counts alone
    # proxies whose X-Forwarded-For / -Proto name the client (its address for rate and connection limits);
    # uvicorn's default, loopback only: put the API behind a proxy on this host, or list the proxy's address
    forwarded_allow_ips: str = "127.0.0.1,::1"
    cors_origins: list[str] = []  # browser origins allowed to call the API (exact, no wildcard)
    heartbeat_ttl_s: int = 10  # online if its last heartbeat is this recent (daemons beat every 3 s)
    long_poll_max_s: float = 30.0
    poll_interval_s: float = 0.25  # long-poll and SSE follow re-check interval
    # the assignments long-poll's re-check when this process runs the jobs (`run_jobs`, no Redis): its own
    # matcher rings the long-polls on every assignment, so the database is only re-read as a safety net
    assignment_recheck_s: float = 5.0
    content_dir: Path | None = None  # default: <state_dir>/marketplace/content
    webapp_dir: Path | None = None  # the built web app served at /app (default: build/webapp, `make setup`)
    siwe_domain: str | None = None  # default: host[:port] of marketplace_url
    # run the background jobs (indexer, matching, heartbeats, deadlines, settlement) in the API process
    # (the embedded default for one machine; ignored when redis_url is set: Celery runs them then)
    run_jobs: bool = False

    @model_validator(mode="after")
    def _secret_outside_dev(self) -> MarketplaceSettings:
        if self.chain_id != DEV_CHAIN_ID:
            if not self.auth_secret or self.auth_secret == DEV_AUTH_SECRET:
                raise ValueError(
                    f"HASHGRID_AUTH_SECRET must be set on chain {self.chain_id}; the default dev "
                    f"secret is accepted only on chain {DEV_CHAIN_ID}"
                )
            if len(self.auth_secret) < 32:
                raise ValueError("HASHGRID_AUTH_SECRET must be at least 32 characters")
        origins = self.cors_origins
        if "*" in origins or any(not origin.startswith(("http://", "https://")) for origin in origins):
            raise ValueError(f"HASHGRID_CORS_ORIGINS must be exact scheme://host[:port], not {origins}")
        for name in ("rate_limit_ip", "rate_limit_wallet", "rate_limit_login", "rate_limit_read"):
            Rule.parse(name, getattr(self, name))  # fails fast on a malformed rule
        return self

    @property
    def secret(self) -> bytes:
        return (self.auth_secret or DEV_AUTH_SECRET).encode()

    @property
    def keys(self) -> KeyRing:
        """The token key ring: `auth_secret` signs, `auth_previous_secrets` are still accepted."""
        from marketplace.api.security import KeyRing

        return KeyRing(self.secret, tuple(secret.encode() for secret in self.auth_previous_secrets))

    @property
    def content_path(self) -> Path:
        return self.content_dir or (self.state_dir / "marketplace" / "content")

    @property
    def login_domain(self) -> str:
        if self.siwe_domain:
            return self.siwe_domain
        return self.marketplace_url.split("://", 1)[-1].split("/", 1)[0]
