"""`Guard`: the ASGI layer in front of every route that bounds what one client can make the server do.

- Body caps per route (`body_cap`): a declared Content-Length over the cap is answered 413 before a byte is
  read; a chunked body is counted as it is read and refused (413) at the first piece past the cap, so no route
  ever holds more than its cap, whatever the handler does with the body.
- Body timeouts: a body must keep arriving (`body_read_timeout_s` between pieces, `body_timeout_s` in all),
  else 408. Header timeouts and connection limits sit in the HTTP protocol (server.py).
- Rate limits per client address on mutating and expensive routes (429 with Retry-After); the per-wallet
  limit is `limit_wallet`, called once the caller is authenticated.
- Security headers on every response.

Pure ASGI and a few dict lookups per request: it sits on the ingest hot path (POST /tasks).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hashgrid.errors import HashgridError
from marketplace.api.errors import BodyTimeout, PayloadTooLarge, RateLimited
from marketplace.api.ratelimit import RateLimiter, Rule, limiter_for
from marketplace.settings import MarketplaceSettings

METERED = "hashgrid.metered"  # scope key: the route counts against the caller's rate limits
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # no route reads a body for these
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-site"),
]
# JSON and blobs only: no page of the API may run script or be framed (the interactive /docs excepted)
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
NO_STORE = (b"cache-control", b"no-store")
DOCS_PATHS = ("/docs", "/redoc")
# the web app (/app): its own scripts, styles and images, and calls to this origin only (the wallet talks to
# the chain, not the page); no inline script, no framing, no plugins, no forms posted elsewhere
WEBAPP_CSP = (b"content-security-policy",
              b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              b"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
              b"frame-ancestors 'none'")
WEBAPP_PATH = "/app"


@dataclass(frozen=True)
class Limits:
    """The guard's settings, parsed once."""

    max_body_bytes: int
    max_blob_bytes: int
    max_login_bytes: int
    max_log_bytes: int
    body_read_timeout_s: float
    body_timeout_s: float
    ip: Rule | None
    wallet: Rule | None
    login: Rule | None
    read: Rule | None

    @classmethod
    def from_settings(cls, settings: MarketplaceSettings) -> Limits:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_blob_bytes=settings.max_blob_bytes,
            max_login_bytes=settings.max_login_bytes,
            max_log_bytes=settings.max_log_bytes,
            body_read_timeout_s=settings.body_read_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            ip=Rule.parse("ip", settings.rate_limit_ip),
            wallet=Rule.parse("wallet", settings.rate_limit_wallet),
            login=Rule.parse("login", settings.rate_limit_login),
            read=Rule.parse("read", settings.rate_limit_read),
        )


def body_cap(limits: Limits, method: str, path: str) -> int:
    """The most bytes of body the route reads (docs/api.md, "Limits")."""
    if method == "PUT" and path.startswith("/blobs/"):
        return limits.max_blob_bytes
    if path == "/auth/siwe":
        return limits.max_login_bytes
    if method == "POST" and path.startswith("/providers/") and path.endswith("/logs"):
        return limits.max_log_bytes
    return limits.max_body_bytes


def is_expensive(method: str, path: str) -> bool:
    """Reads that hold a connection or stream data: downloads, log follows, assignment long-polls."""
    if method not in ("GET", "HEAD"):
        return False
    if path.startswith("/blobs/") and method == "GET":
        return True
    parts = path.split("/")
    return len(parts) == 4 and (parts[1], parts[3]) in (("tasks", "logs"), ("providers", "assignments"))


def rule_for(limits: Limits, method: str, path: str) -> tuple[Rule | None, bool]:
    """(the per-address rule, whether the per-wallet rule applies)."""
    if path.startswith("/auth/") and path in ("/auth/nonce", "/auth/siwe"):
        return limits.login, False
    if method not in BODYLESS or is_expensive(method, path):
        return limits.ip, True
    if path == "/health":  # liveness probes
        return None, False
    return limits.read, False  # other reads: a database query, and a signature to recover if signed


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def error_response(error: HashgridError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(error.to_dict()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    if isinstance(error, PayloadTooLarge | BodyTimeout):
        headers.append((b"connection", b"close"))  # the rest of the body is never read
    return error.http_status, headers, body


class _Exchange:
    """One request: counts its body, and replaces the app's answer once the guard refused the body."""

    __slots__ = (
        "cap", "limits", "receive", "send", "read", "deadline", "refusal", "started", "headers", "unread",
        "done",
    )

    def __init__(
        self, cap: int, limits: Limits, receive: Receive, send: Send, headers: list[Any], *, has_body: bool
    ) -> None:
        self.unread = has_body  # the body is still (partly) on the wire
        self.done = False  # the last piece of the body was received
        self.cap = cap
        self.limits = limits
        self.receive = receive
        self.send = send
        self.read = 0
        self.deadline = 0.0
        self.refusal: HashgridError | None = None
        self.started = False
        self.headers = headers

    async def guarded_receive(self) -> Message:
        if self.refusal is not None:
            raise self.refusal
        if self.done:  # the body is in: what follows is waiting for a disconnect (SSE, long-polls), unbounded
            return await self.receive()
        now = time.monotonic()
        if not self.deadline:
            self.deadline = now + self.limits.body_timeout_s
        wait = min(self.limits.body_read_timeout_s, self.deadline - now)
        try:
            async with asyncio.timeout(wait):
                message = await self.receive()
        except TimeoutError:
            self.refusal = BodyTimeout(
                f"request body stalled: nothing for {self.limits.body_read_timeout_s} s or not all of it in "
                f"{self.limits.body_timeout_s} s",
                read_timeout_s=self.limits.body_read_timeout_s,
                total_timeout_s=self.limits.body_timeout_s,
            )
            raise self.refusal from None
        if message["type"] != "http.request":
            self.done = True
        else:
            self.read += len(message.get("body", b""))
            self.done = not message.get("more_body")
            self.unread = not self.done
            if self.read > self.cap:
                self.refusal = too_large(self.read, self.cap, declared=False)
                raise self.refusal
        return message

    async def guarded_send(self, message: Message) -> None:
        if self.refusal is not None and not self.started:
            return  # the guard answers for the refused body once the app is done
        if message["type"] == "http.response.start":
            self.started = True
            message["headers"] = [*message.get("headers", ()), *self.headers]
            if self.unread:  # answered without reading it all: close rather than drain the rest
                message["headers"].append((b"connection", b"close"))
        await self.send(message)


def too_large(size: int, cap: int, *, declared: bool) -> PayloadTooLarge:
    what = f"request body of {size} bytes" if declared else f"request body past {cap} bytes"
    return PayloadTooLarge(f"{what} exceeds this route's {cap}-byte limit", limit=cap)


class Guard:
    """The ASGI middleware; `limits` and `limiter` are app.state's, shared with `limit_wallet`."""

    def __init__(self, app: ASGIApp, *, limits: Limits, limiter: RateLimiter) -> None:
        self.app = app
        self.limits = limits
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = list(SECURITY_HEADERS)
        if path == WEBAPP_PATH or path.startswith(WEBAPP_PATH + "/"):
            headers += [WEBAPP_CSP]
        elif not path.startswith(DOCS_PATHS):
            headers += [API_CSP]
        if scope.get("scheme") == "https":
            headers.append(HSTS)
        declared, chunked = _body_headers(scope)
        rule, metered = rule_for(self.limits, method, path)
        if metered:
            scope[METERED] = True
        if rule is not None:
            wait = await self.limiter.hit(rule, client_address(scope))
            if wait:
                if chunked or declared:
                    headers.append((b"connection", b"close"))
                await self._answer(send, rate_limited(rule, "this address", wait), headers)
                return
        cap = body_cap(self.limits, method, path)
        if declared is not None and declared > cap:
            await self._answer(send, too_large(declared, cap, declared=True), headers)
            return
        exchange = _Exchange(cap, self.limits, receive, send, headers, has_body=chunked or bool(declared))
        try:
            await self.app(scope, exchange.guarded_receive, exchange.guarded_send)
        except Exception:
            if exchange.refusal is None or exchange.started:
                raise
        if exchange.refusal is not None and not exchange.started:
            await self._answer(send, exchange.refusal, headers)

    @staticmethod
    async def _answer(send: Send, error: HashgridError, extra: list[tuple[bytes, bytes]]) -> None:
        status, headers, body = error_response(error)
        await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra, NO_STORE]})
        await send({"type": "http.response.body", "body": body})


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """(declared Content-Length, whether the body is chunked)."""
    declared, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


def rate_limited(rule: Rule, who: str, wait: float) -> RateLimited:
    error = RateLimited(
        f"rate limit for {who} ({rule.burst} requests per {rule.period_s:g} s) reached; "
        f"retry in {wait:.1f} s",
        limit=rule.name,
        burst=rule.burst,
        period_s=rule.period_s,
        retry_after_s=round(wait, 3),
    )
    error.retry_after_s = wait
    return error


async def limit_wallet(request: Request, address: str) -> None:
    """Count an authenticated request against its wallet's limit (only on metered routes); RateLimited."""
    if not request.scope.get(METERED):
        return
    rule: Rule | None = request.app.state.limits.wallet
    if rule is None:
        return
    wait = await request.app.state.rate_limiter.hit(rule, address)
    if wait:
        raise rate_limited(rule, f"wallet {address}", wait)


class StreamSlots:
    """Long-lived responses (SSE log follows, assignment long-polls) open per wallet in this process: each
    holds a connection and polls the database, so a wallet may hold only a few at once (429 past them)."""

    def __init__(self, per_wallet: int) -> None:
        self.per_wallet = per_wallet
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def open(self, wallet: str) -> int:
        return self._open[wallet]

    def take(self, wallet: str) -> Callable[[], None]:
        """A slot for `wallet` (RateLimited when it holds them all); call the result once to give it back
        (later calls do nothing)."""
        with self._lock:
            if self._open[wallet] >= self.per_wallet:
                error = RateLimited(
                    f"wallet {wallet} already holds {self.per_wallet} open streams or long-polls here; close "
                    "one first",
                    limit="streams",
                    open=self._open[wallet],
                    retry_after_s=1,
                )
                error.retry_after_s = 1.0
                raise error
            self._open[wallet] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._open[wallet] -= 1
                if self._open[wallet] <= 0:
                    del self._open[wallet]

        return release


def rate_limiter(settings: MarketplaceSettings) -> RateLimiter:
    """Redis-backed when a Redis URL is configured (shared by replicas), else in this process."""
    return limiter_for(settings.rate_limit_redis_url or settings.redis_url)
