"""Reports the marketplace has not acknowledged yet, kept in the daemon's journal until it has.

A marketplace restart or outage must only delay what the customer sees: every log chunk, output blob,
output manifest, usage report and status is a row of the journal's `outbox` table, written before any HTTP
call and deleted only when the marketplace answered 2xx. One sender thread delivers them oldest first (a
task's reports in the order they were made: blobs before the manifest that names them, usage before
`executed`) and retries with back-off for as long as it takes. A report the marketplace refuses outright
(a 4xx no retry can change) is kept as `rejected` with the reason and blocks nothing after it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from provider.journal import Journal

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.25
MAX_RETRY_S = 5.0  # a marketplace that comes back is heard from within this long
BATCH = 200  # reports read per pass


class ReportKind(StrEnum):
    LOG = "log"  # {"seq", "data"}: POST /providers/{me}/tasks/{id}/logs (idempotent by seq)
    BLOB = "blob"  # {"sha256"}: PUT /blobs/{sha256}, the bytes read from the content store when sent
    OUTPUTS = "outputs"  # {"files", "result_hash"}: the output manifest
    USAGE = "usage"  # the signed usage report
    STATUS = "status"  # {"status", "reason"?, "result_hash"?}


@dataclass(frozen=True)
class Report:
    """One queued report."""

    id: int
    task_id: int
    kind: ReportKind
    body: dict[str, Any]
    attempts: int
    error: str | None = None


class Outbox:
    """The queue itself (rows in the journal's file, so a report and the journal entry it belongs to can be
    written in one transaction: `journal.transaction()`)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def put(self, task_id: int, kind: ReportKind, body: dict[str, Any]) -> None:
        self.journal.execute(
            "INSERT INTO outbox (task_id, kind, body, created_at) VALUES (?, ?, ?, ?)",
            (task_id, str(kind), json.dumps(body, sort_keys=True), time.time()))

    def put_logs(self, task_id: int, parts: Sequence[str]) -> None:
        """Log parts with the task's next sequence numbers (kept across restarts, so the marketplace can
        drop a part it already has when an acknowledgement was lost)."""
        if not parts:
            return
        key = f"log_seq.{task_id}"
        with self.journal.transaction():
            seq = int(self.journal.get_meta(key) or 0)
            for part in parts:
                self.put(task_id, ReportKind.LOG, {"seq": seq, "data": part})
                seq += 1
            self.journal.set_meta(key, str(seq))

    def due(self, now: float) -> list[Report]:
        """Pending reports in the order they were made, each task's up to its first one not due yet."""
        rows = self.journal.execute(
            "SELECT id, task_id, kind, body, attempts, not_before FROM outbox WHERE state = 'pending' "
            "ORDER BY id LIMIT ?", (BATCH,))
        blocked: set[int] = set()
        found = []
        for row in rows:
            task_id = int(row["task_id"])
            if task_id in blocked:
                continue
            if float(row["not_before"]) > now:
                blocked.add(task_id)
                continue
            found.append(Report(int(row["id"]), task_id, ReportKind(row["kind"]), json.loads(row["body"]),
                                int(row["attempts"])))
        return found

    def next_at(self) -> float | None:
        """When the earliest pending report may be tried (wall clock), None when nothing is pending."""
        rows = self.journal.execute("SELECT MIN(not_before) AS at FROM outbox WHERE state = 'pending'")
        return None if not rows or rows[0]["at"] is None else float(rows[0]["at"])

    def delivered(self, report: Report) -> None:
        self.journal.execute("DELETE FROM outbox WHERE id = ?", (report.id,))

    def retry_later(self, report: Report, error: str) -> float:
        """Back off this report (doubling from FIRST_RETRY_S up to MAX_RETRY_S); returns the delay."""
        delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(report.attempts, 16))
        self.journal.execute("UPDATE outbox SET attempts = attempts + 1, not_before = ?, error = ? "
                             "WHERE id = ?", (time.time() + delay, error[:2000], report.id))
        return delay

    def reject(self, report: Report, error: str) -> None:
        self.journal.execute("UPDATE outbox SET state = 'rejected', attempts = attempts + 1, error = ? "
                             "WHERE id = ?", (error[:2000], report.id))

    def pending(self, task_id: int | None = None) -> int:
        if task_id is None:
            rows = self.journal.execute("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
        else:
            rows = self.journal.execute("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending' AND "
                                        "task_id = ?", (task_id,))
        return int(rows[0]["n"])

    def rejected(self, task_id: int) -> list[Report]:
        rows = self.journal.execute(
            "SELECT id, task_id, kind, body, attempts, error FROM outbox WHERE state = 'rejected' AND "
            "task_id = ? ORDER BY id", (task_id,))
        return [Report(int(r["id"]), int(r["task_id"]), ReportKind(r["kind"]), json.loads(r["body"]),
                       int(r["attempts"]), r["error"]) for r in rows]


class OutboxSender:
    """The thread that empties the outbox through `send` (which raises an error with `retryable` and
    `status` attributes, like MarketplaceError). An unreachable marketplace pauses the whole pass; a
    retryable answer (5xx, 408, 429) backs off only that task's reports; any other refusal rejects one."""

    def __init__(self, outbox: Outbox, send: Callable[[Report], None], *,
                 on_delivered: Callable[[int], None] | None = None) -> None:
        self.outbox = outbox
        self.send = send
        self.on_delivered = on_delivered
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreachable_since: float | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="report-outbox", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, *, drain_s: float = 0.0) -> int:
        """Stop after at most `drain_s` more seconds of delivering; returns how many reports stay queued
        (they are sent by the next start)."""
        deadline = time.monotonic() + drain_s
        while self.outbox.pending() and time.monotonic() < deadline and self._thread is not None:
            self._wake.set()
            self._stop.wait(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return self.outbox.pending()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # a bug or a journal problem: log it and keep the thread alive
                log.exception("report outbox: unexpected error")
            next_at = self.outbox.next_at()
            wait = MAX_RETRY_S if next_at is None else max(0.0, min(MAX_RETRY_S, next_at - time.time()))
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()

    def deliver_due(self) -> int:
        """One pass over the due reports; returns how many were delivered."""
        delivered = 0
        failed: set[int] = set()
        for report in self.outbox.due(time.time()):
            if self._stop.is_set():
                break
            if report.task_id in failed:
                continue
            try:
                self.send(report)
            except Exception as exc:
                retryable = bool(getattr(exc, "retryable", False))
                status = getattr(exc, "status", None)
                message = str(getattr(exc, "message", exc))
                if not retryable and status is not None and status != 429 and status != 408:
                    self.outbox.reject(report, message)
                    log.warning("task %d: the marketplace refused its %s report: %s", report.task_id,
                                report.kind, message)
                    continue
                delay = self.outbox.retry_later(report, message)
                if status is None or status in (502, 503, 504):  # nobody answered: pause everything
                    if self._unreachable_since is None:
                        self._unreachable_since = time.monotonic()
                        log.warning("marketplace unreachable; %d report(s) kept in the journal until it "
                                    "answers (%s)", self.outbox.pending(), message)
                    self._pause(delay)
                    break
                failed.add(report.task_id)
                log.info("task %d: %s report not taken yet, retrying in %.2gs: %s", report.task_id,
                         report.kind, delay, message)
                continue
            self.outbox.delivered(report)
            delivered += 1
            if self._unreachable_since is not None:
                log.info("marketplace reachable again after %.1fs; sending the queued reports",
                         time.monotonic() - self._unreachable_since)
                self._unreachable_since = None
            if self.on_delivered is not None:
                self.on_delivered(report.task_id)
        return delivered

    def _pause(self, delay: float) -> None:
        """Every pending report waits `delay` too: one probe per back-off step, not one per report."""
        self.outbox.journal.execute("UPDATE outbox SET not_before = MAX(not_before, ?) "
                                    "WHERE state = 'pending'", (time.time() + delay,))
