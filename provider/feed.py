"""Where the daemon learns of its assignments: one small Protocol, so the marketplace's HTTP feed can replace
the chain-event feed without touching the runners.

A feed is at-least-once: `poll` may return an assignment again until it is acked, and the daemon's journal
makes receiving one twice harmless. `ChainAssignmentFeed` reads TaskAssigned events naming this provider from
a block cursor kept in the journal, `confirmations` blocks behind the head (reorg safety off the dev chain).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from provider.chain_ops import ChainOps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """A replica of `task_id` assigned to this provider; `source` says where it was seen (for the journal)."""

    task_id: int
    source: str
    spec_hash: str | None = None  # hex, when the feed knows it (the marketplace does; chain events do not)


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
