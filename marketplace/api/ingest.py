"""Group commit for signed spec registrations (POST /tasks), the API's ingest hot path.

A writer thread per process takes the nonce and spec rows of concurrent requests and writes whatever has
queued up in one transaction (INSERT ... ON CONFLICT DO NOTHING RETURNING), so requests share a commit and
none holds a connection or a threadpool thread while it waits. The nonce's primary key still refuses a
replay, across processes too (uvicorn workers share the database), and a refused request writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite

from marketplace.api.chain import FeeOracle
from marketplace.api.errors import NonceReused
from marketplace.models import SpecRecord, UsedNonce, utcnow

log = logging.getLogger(__name__)
MAX_BATCH = 512  # rows per transaction: bounds one commit's latency under a burst
MIN_COMMIT_INTERVAL_S = 0.004  # a batch waits for more requests at most this long after the previous one
IDLE_EXIT_S = 5.0  # the thread ends after this long without work and is restarted on demand


@dataclass(frozen=True)
class SpecIngest:
    """One request's writes: its nonce (None for a bearer token) and the validated, normalised spec."""

    customer: str  # lower-case address
    spec_hash: str  # hex, no 0x
    spec: dict[str, Any]
    nonce: str | None = None
    expiry: int | None = None


@dataclass(frozen=True)
class SpecIngested:
    created: bool  # False: this customer had registered the spec before
    fee_bps: int  # the protocol fee read for this batch, to quote the escrow


_Entry = tuple[SpecIngest, asyncio.AbstractEventLoop, "asyncio.Future[SpecIngested]"]
_STOP = object()


def _statements(dialect: str) -> tuple[Any, Any]:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    nonces, specs = UsedNonce.__table__, SpecRecord.__table__  # type: ignore[attr-defined]
    return (
        insert(nonces).on_conflict_do_nothing().returning(nonces.c.address, nonces.c.nonce),
        insert(specs).on_conflict_do_nothing().returning(specs.c.spec_hash, specs.c.customer),
    )


class SpecWriter:
    """Writes SpecIngest rows for coroutines of any event loop, a batch per transaction."""

    def __init__(self, engine: Engine, fees: FeeOracle, *, max_batch: int = MAX_BATCH,
                 on_written: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._fees = fees
        self._on_written = on_written  # after each committed batch: its posts are coming on chain
        self._max_batch = max_batch
        self._insert_nonces, self._insert_specs = _statements(engine.dialect.name)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def write(self, item: SpecIngest) -> SpecIngested:
        """Spend the nonce and record the spec, committed; NonceReused for a replay (nothing written)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SpecIngested] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the spec writer is closed")
            self._queue.put((item, loop, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="spec-writer", daemon=True)
                self._thread.start()
        return await future

    def reopen(self) -> None:
        """Take requests again after `close` (an app whose lifespan runs more than once, as in tests)."""
        with self._lock:
            if self._closed:
                self._queue = queue.SimpleQueue()
                self._thread = None
                self._closed = False

    def close(self) -> None:
        """Write what is queued, then stop the thread (the app's shutdown)."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(_STOP)
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        last_start = 0.0
        while True:
            try:
                first = self._queue.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # a writer enqueues under the lock, so none is missed
                        self._thread = None
                        return
                continue
            batch: list[_Entry] = []
            stop = first is _STOP
            if not stop:
                batch.append(first)
            # under load, gather until MIN_COMMIT_INTERVAL_S after the previous commit began: a commit costs
            # ~0.3 ms of mostly fixed work, so fewer, larger batches leave the GIL to the event loop
            gather_until = last_start + MIN_COMMIT_INTERVAL_S
            while not stop and len(batch) < self._max_batch:
                try:
                    wait = gather_until - time.monotonic()
                    entry = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    stop = True
                else:
                    batch.append(entry)
            last_start = time.monotonic()
            if batch:
                self._deliver(batch, self._write_batch([item for item, _, _ in batch]))
                if self._on_written is not None:
                    self._on_written()
            if stop:
                return

    def _write_batch(self, items: list[SpecIngest]) -> list[SpecIngested | BaseException]:
        """One transaction for the batch; a failure before commit fails every request in it."""
        try:
            fee_bps = self._fees.fee_bps()  # off the event loop: the chain oracle may call the RPC
            results: list[SpecIngested | BaseException | None] = [None] * len(items)
            nonce_rows: dict[tuple[str, str], int] = {}  # first request per nonce; a repeat is a replay
            for i, item in enumerate(items):
                if item.nonce is None or item.expiry is None:
                    continue
                key = (item.customer, item.nonce)
                if key in nonce_rows:
                    results[i] = _replay(item)
                else:
                    nonce_rows[key] = i
            with self._engine.begin() as conn:
                if nonce_rows:
                    rows = [
                        {
                            "address": address,
                            "nonce": nonce,
                            "expires_at": datetime.fromtimestamp(items[i].expiry or 0, UTC),
                        }
                        for (address, nonce), i in nonce_rows.items()
                    ]
                    spent = {(row[0], row[1]) for row in conn.execute(self._insert_nonces, rows)}
                    for key, i in nonce_rows.items():
                        if key not in spent:
                            results[i] = _replay(items[i])
                now = utcnow()
                spec_rows: dict[tuple[str, str], dict[str, Any]] = {}
                for i, item in enumerate(items):
                    if results[i] is None:
                        spec_rows.setdefault(
                            (item.spec_hash, item.customer),
                            {
                                "spec_hash": item.spec_hash,
                                "customer": item.customer,
                                "spec": item.spec,
                                "created_at": now,
                            },
                        )
                inserted: set[tuple[str, str]] = set()
                if spec_rows:
                    written = conn.execute(self._insert_specs, list(spec_rows.values()))
                    inserted = {(row[0], row[1]) for row in written}
            out: list[SpecIngested | BaseException] = []
            for i, item in enumerate(items):
                result = results[i]
                if result is None:
                    # the first request of the batch to register a spec created it; repeats see it existing
                    key = (item.spec_hash, item.customer)
                    result = SpecIngested(created=key in inserted, fee_bps=fee_bps)
                    inserted.discard(key)
                out.append(result)
            return out
        except Exception as exc:  # the database or the fee oracle: every request of the batch gets the error
            log.warning("spec batch of %d failed: %s", len(items), exc)
            return [exc] * len(items)

    @staticmethod
    def _deliver(batch: list[_Entry], results: list[SpecIngested | BaseException]) -> None:
        """Resolve the futures, one wake-up per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[SpecIngested], Any]]] = {}
        for (_, loop, future), result in zip(batch, results, strict=True):
            by_loop.setdefault(loop, []).append((future, result))
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its requests are gone
                loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(pairs: list[tuple[asyncio.Future[SpecIngested], Any]]) -> None:
    for future, result in pairs:
        if future.done():  # the request was cancelled (client gone); its writes stand
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _replay(item: SpecIngest) -> NonceReused:
    return NonceReused(
        f"nonce {item.nonce!r} of {item.customer} was already used: the request is a replay",
        address=item.customer,
        nonce=item.nonce,
    )
