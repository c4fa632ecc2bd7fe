"""The marketplace's own settings on top of the shared `Settings`: auth secret, limits, timeouts.

Fails fast: outside the dev chain a real `HASHGRID_AUTH_SECRET` (32+ characters) is required, so a
deployment can never run on the publicly known development secret.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from hashgrid.config import DEV_CHAIN_ID, Settings

# DEV-ONLY: the HMAC secret for session tokens on the dev chain (31337) when none is configured.
DEV_AUTH_SECRET = "hashgrid-dev-only-insecure-auth-secret-31337"
MIB = 1024 * 1024


class MarketplaceSettings(Settings):
    """Knobs of the marketplace API (env HASHGRID_*)."""

    auth_secret: str | None = None  # HMAC key of SIWE session tokens
    token_ttl_s: int = 3600  # session token lifetime (capped by the SIWE message's expiration)
    max_signature_ttl_s: int = 600  # a signed request's expiry may be at most this far ahead
    max_blob_bytes: int = 64 * MIB
    max_body_bytes: int = 1 * MIB  # JSON request bodies
    heartbeat_ttl_s: int = 90  # a provider is online if its last heartbeat is this recent
    long_poll_max_s: float = 30.0
    poll_interval_s: float = 0.25  # long-poll and SSE follow re-check interval
    content_dir: Path | None = None  # default: <state_dir>/marketplace/content
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
        return self

    @property
    def secret(self) -> bytes:
        return (self.auth_secret or DEV_AUTH_SECRET).encode()

    @property
    def content_path(self) -> Path:
        return self.content_dir or (self.state_dir / "marketplace" / "content")

    @property
    def login_domain(self) -> str:
        if self.siwe_domain:
            return self.siwe_domain
        return self.marketplace_url.split("://", 1)[-1].split("/", 1)[0]
