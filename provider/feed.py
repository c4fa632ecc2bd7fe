"""Where the daemon learns of its assignments: one small Protocol, so the marketplace's HTTP feed can replace
the chain-event feed without touching the runners.

A feed is at-least-once: `poll` may return an assignment again until it is acked, and the daemon's journal
makes receiving one twice harmless. `ChainAssignmentFeed` reads TaskAssigned events naming this provider from
a block cursor kept in the journal, `confirmations` blocks behind the head (reorg safety off the dev chain).
`MarketplaceAssignmentFeed` long-polls the marketplace API (`hashgrid provider run --marketplace URL`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hashgrid.content import ContentStore
from hashgrid.errors import HashgridError
from provider.chain_ops import ChainOps

if TYPE_CHECKING:
    from provider.marketplace_client import MarketplaceClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """A replica of `task_id` assigned to this provider; `source` says where it was seen (for the journal)."""

    task_id: int
    source: str
    spec_hash: str | None = None  # hex, when the feed knows it (the marketplace does; chain events do not)
    runtime_class: str | None = None  # the class the marketplace placed the task in (chain events: unknown)


class AssignmentFeed(Protocol):
    """New assignments for this provider."""

    def poll(self) -> list[Assignment]:
        """Assignments not yet acked, oldest first (may repeat ones returned before but not acked)."""
        ...

    def ack(self, assignment: Assignment) -> None:
        """The assignment is durably journaled: the feed need not return it again."""
        ...


class ChainAssignmentFeed:
    """TaskAssigned events for this provider, from a saved block cursor.

    The cursor (the next block to read) advances only once every assignment of a poll is acked, so a crash
    between poll and journal re-reads those blocks rather than skipping them.
    """

    def __init__(self, ops: ChainOps, *, load_cursor: Callable[[], str | None],
                 save_cursor: Callable[[str], None], confirmations: int = 0, start_block: int = 0) -> None:
        self.ops = ops
        self.confirmations = max(0, confirmations)
        self._load = load_cursor
        self._save = save_cursor
        saved = load_cursor()
        self.cursor = int(saved) if saved is not None else start_block
        self._pending: set[int] = set()
        self._pending_to: int | None = None

    def poll(self) -> list[Assignment]:
        head = self.ops.block_number() - self.confirmations
        if head < self.cursor:
            return []
        events = self.ops.assignments(self.cursor, head)
        self._pending = {event.task_id for event in events}
        self._pending_to = head
        if not self._pending:
            self._advance()
        found: dict[int, Assignment] = {}
        for event in events:
            found.setdefault(event.task_id, Assignment(
                task_id=event.task_id, source=f"chain:block {event.block_number} tx {event.tx_hash}"))
        if found:
            log.debug("feed: %d assignment(s) in blocks %d..%d", len(found), self.cursor, head)
        return list(found.values())

    def ack(self, assignment: Assignment) -> None:
        self._pending.discard(assignment.task_id)
        if not self._pending:
            self._advance()

    def _advance(self) -> None:
        if self._pending_to is not None and self._pending_to + 1 > self.cursor:
            self.cursor = self._pending_to + 1
            self._save(str(self.cursor))
        self._pending_to = None


class MarketplaceAssignmentFeed:
    """Assignments from the marketplace's long-poll (GET /providers/{address}/assignments), acked there.

    A background thread long-polls and, for each new assignment, first copies the spec, the wasm module and
    the inputs from the marketplace's blob store into the daemon's content store (verified by sha256), so the
    runners find everything locally; an assignment whose content cannot be fetched yet is not returned (the
    next long-poll returns it again, since it is not acked). `poll` never blocks; `on_new` (the daemon's wake
    event) is called when something arrives.
    """

    def __init__(self, client: MarketplaceClient, store: ContentStore, *, wait: float = 20.0,
                 on_new: Callable[[], None] | None = None, retry_s: float = 1.0) -> None:
        self.client = client
        self.store = store
        self.wait = wait
        self.on_new = on_new
        self.retry_s = retry_s
        self._pending: dict[int, Assignment] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="marketplace-feed", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def poll(self) -> list[Assignment]:
        self.start()
        with self._lock:
            return sorted(self._pending.values(), key=lambda a: a.task_id)

    def ack(self, assignment: Assignment) -> None:
        from provider.marketplace_client import retrying

        with self._lock:
            self._pending.pop(assignment.task_id, None)
        retrying(f"ack of task {assignment.task_id}", lambda: self.client.ack(assignment.task_id))

    # ------------------------------------------------------------------ the long-poll thread
    def _loop(self) -> None:
        from provider.marketplace_client import MarketplaceError

        while not self._stop.is_set():
            try:
                items = self.client.assignments(wait=self.wait)
            except MarketplaceError as exc:
                log.warning("marketplace feed: %s", exc.message)
                self._stop.wait(self.retry_s)
                continue
            new = False
            for item in items:
                task_id = int(item["task_id"])
                with self._lock:
                    if task_id in self._pending:
                        continue
                spec_hash = str(item["spec_hash"]).lower().removeprefix("0x")
                if not self._fetch(task_id, spec_hash):
                    continue
                with self._lock:
                    self._pending[task_id] = Assignment(
                        task_id=task_id, source=f"marketplace:{self.client.url} round {item.get('round', 1)}",
                        spec_hash=spec_hash, runtime_class=_text(item.get("runtime_class")))
                new = True
            if new and self.on_new is not None:
                self.on_new()
            if not items:
                continue
            if not new:  # only assignments whose content is missing: do not spin
                self._stop.wait(self.retry_s)

    def _fetch(self, task_id: int, spec_hash: str) -> bool:
        """Spec, module and inputs into the local store; False (logged) when something is not there yet."""
        from hashgrid.spec import parse_spec_bytes
        from provider.marketplace_client import MarketplaceError

        try:
            raw = self._blob(spec_hash)
            spec = parse_spec_bytes(raw, source=f"spec {spec_hash}")
            wanted = [blob.sha256 for blob in spec.inputs]
            if spec.runtime == "wasm" and spec.module:
                wanted.append(spec.module)
            for digest in wanted:
                self._blob(digest)
        except (MarketplaceError, HashgridError) as exc:
            log.warning("task %d: cannot fetch its content from the marketplace yet: %s", task_id,
                        exc.message)
            return False
        return True

    def _blob(self, sha256: str) -> bytes:
        if self.store.has(sha256):
            return self.store.get_bytes(sha256)
        data = self.client.get_blob(sha256)
        self.store.put_bytes(data, expected=sha256, what=f"blob {sha256}")
        return data


def _text(value: object) -> str | None:
    return str(value)[:160] if isinstance(value, str) and value else None
