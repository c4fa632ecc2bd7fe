"""One nonce lane per signing key across processes: a Redis lock and a Redis counter.

`NonceManager` (hashgrid/chain/client.py) serialises one process's sends; Celery workers, the API's own jobs
and the CLI each have their own, so two processes signing with the operator key take the same nonce and one
gets "nonce too low" (an 80-task run under worker concurrency 2 logged 36). `RedisNonceLane` keeps the same
`reserve` contract, but the lock (`SET NX PX`, released by a compare-and-delete script) and the next nonce
live in Redis: whoever holds the lock reads the shared counter (or the chain's pending count when there is
none), signs and sends, and stores the next value. A send that fails deletes the counter, so the next holder
reads the chain again. The lock expires after `lock_ttl_s` in case its holder died mid-send.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hashgrid.errors import ChainError

COUNTER_TTL_S = 300
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


class RedisNonceLane:
    """A drop-in for NonceManager whose lock and counter are shared through Redis."""

    def __init__(self, redis_url: str, fetch: Callable[[str], int], *, chain_id: int,
                 lock_ttl_s: float = 30.0, wait_s: float = 60.0) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url)
        self._fetch = fetch
        self._prefix = f"hashgrid:nonce:{chain_id}:"
        self._ttl_ms = int(lock_ttl_s * 1000)
        self._wait_s = wait_s
        self._local = threading.Lock()  # threads of this process queue here first: one Redis waiter each
        self._release = self._redis.register_script(_RELEASE)

    @contextmanager
    def reserve(self, address: str) -> Iterator[int]:
        """Yield the next nonce of `address`; it is consumed only if the block exits without an exception."""
        key = self._prefix + address.lower()
        token = secrets.token_hex(16)
        with self._local:
            self._acquire(key + ":lock", token)
            try:
                stored = self._redis.get(key + ":next")
                nonce = int(stored) if stored is not None else self._fetch(address)
                try:
                    yield nonce
                except BaseException:
                    self._redis.delete(key + ":next")
                    raise
                # an idle counter expires, so a chain rewound under it (anvil's evm_revert) is read again
                self._redis.set(key + ":next", nonce + 1, ex=COUNTER_TTL_S)
            finally:
                self._release(keys=[key + ":lock"], args=[token])

    def reset(self, address: str | None = None) -> None:
        """Forget the shared counters (all, or one account's): the next send reads the chain."""
        if address is not None:
            self._redis.delete(self._prefix + address.lower() + ":next")
            return
        for key in self._redis.scan_iter(match=self._prefix + "*:next"):
            self._redis.delete(key)

    def _acquire(self, key: str, token: str) -> None:
        deadline = time.monotonic() + self._wait_s
        delay = 0.002
        while not self._redis.set(key, token, nx=True, px=self._ttl_ms):
            if time.monotonic() > deadline:
                raise ChainError(f"the nonce lane {key} stayed locked for {self._wait_s:.0f}s", lane=key)
            time.sleep(delay)  # another process is signing with this key: its send takes milliseconds
            delay = min(delay * 2, 0.05)
