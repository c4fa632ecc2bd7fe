"""Rate limits (GCRA, a token bucket kept as one timestamp per key): in this process by default, in Redis when
one is configured, so every API replica counts against the same budget.

A rule "N/T" allows a burst of N requests and N per T seconds sustained. A refused request learns how long
to wait (`Retry-After`). If Redis cannot be reached the process falls back to its own counts (logged): limits
stay on, only per replica.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)
MAX_KEYS = 100_000  # keys one process remembers; the least recently used beyond it start afresh


@dataclass(frozen=True)
class Rule:
    """A burst of `burst` requests, refilled at `burst / period_s` per second."""

    name: str
    burst: int
    period_s: float

    @property
    def interval_s(self) -> float:
        return self.period_s / self.burst

    @classmethod
    def parse(cls, name: str, text: str) -> Rule | None:
        """'N/T' (N requests per T seconds) or 'off' (None)."""
        if text.strip().lower() in ("off", "none", ""):
            return None
        count, _, period = text.partition("/")
        try:
            rule = cls(name=name, burst=int(count), period_s=float(period))
        except ValueError:
            raise ValueError(
                f"rate limit {name}={text!r} must be 'N/T' (N requests per T seconds) or 'off'"
            ) from None
        if rule.burst < 1 or not rule.period_s > 0:
            raise ValueError(f"rate limit {name}={text!r} needs N >= 1 and T > 0")
        return rule


class RateLimiter(Protocol):
    async def hit(self, rule: Rule, key: str) -> float:
        """Count one request for `key` under `rule`: 0 if allowed, else seconds until one would be."""
        ...


def gcra(tat: float | None, now: float, rule: Rule) -> tuple[float, float]:
    """(new theoretical arrival time, wait): wait 0 means allowed and the new time is to be stored."""
    start = max(tat or now, now)
    new_tat = start + rule.interval_s
    wait = new_tat - now - rule.period_s
    return (new_tat, 0.0) if wait <= 0 else (start, wait)


class MemoryRateLimiter:
    """Counts in this process; bounded to MAX_KEYS keys (a forgotten key starts with a full burst)."""

    def __init__(self, *, max_keys: int = MAX_KEYS) -> None:
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._max_keys = max_keys

    async def hit(self, rule: Rule, key: str) -> float:
        return self.hit_now(rule, key, now=time.monotonic())

    def hit_now(self, rule: Rule, key: str, *, now: float) -> float:
        full = f"{rule.name}:{key}"
        with self._lock:
            tat, wait = gcra(self._tats.get(full), now, rule)
            if wait == 0:
                self._tats[full] = tat
                self._tats.move_to_end(full)
                while len(self._tats) > self._max_keys:
                    self._tats.popitem(last=False)
            return wait


# KEYS[1] the key; ARGV: interval ms, period ms. Redis' own clock, so replicas need not agree on time.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - now - period
if wait > 0 then return wait end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""


class RedisRateLimiter:
    """Counts in Redis (one key per rule and caller, expiring when its bucket is full again)."""

    PREFIX = "hashgrid:rate:"

    def __init__(self, url: str, *, fallback: MemoryRateLimiter | None = None) -> None:
        self._url = url
        # per event loop (a redis.asyncio client is bound to its loop), forgotten with the loop
        self._clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._fallback = fallback or MemoryRateLimiter()
        self._script_sha: str | None = None
        self._warned = False

    def _client(self) -> Any:
        import redis.asyncio

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = redis.asyncio.Redis.from_url(self._url, socket_timeout=0.5, socket_connect_timeout=0.5)
            self._clients[loop] = client
        return client

    async def close(self) -> None:
        """Close this event loop's connection (the app's shutdown)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def hit(self, rule: Rule, key: str) -> float:
        from redis.exceptions import NoScriptError, RedisError

        client = self._client()
        args = (math.ceil(rule.interval_s * 1000), math.ceil(rule.period_s * 1000))
        name = f"{self.PREFIX}{rule.name}:{key}"
        try:
            try:
                if self._script_sha is None:
                    self._script_sha = await client.script_load(_GCRA_LUA)
                waited = await client.evalsha(self._script_sha, 1, name, *args)
            except NoScriptError:  # Redis restarted and lost its script cache
                self._script_sha = None
                waited = await client.eval(_GCRA_LUA, 1, name, *args)
        except (RedisError, OSError, RuntimeError) as exc:  # RuntimeError: a connection of a closed loop
            if not self._warned:
                log.warning("rate limits: Redis at %s failed (%s); counting in this process", self._url, exc)
                self._warned = True
            return await self._fallback.hit(rule, key)
        self._warned = False
        return float(waited) / 1000.0


def limiter_for(redis_url: str | None) -> RateLimiter:
    return RedisRateLimiter(redis_url) if redis_url else MemoryRateLimiter()
