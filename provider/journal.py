"""The daemon's durable per-task journal (SQLite, WAL), so a crash or restart neither forgets a task nor
commits one twice.

Phases: received -> running -> executed -> committed -> revealed, or refused / failed. The salt is drawn once,
when the task is first received, and never changes: a task re-run after a crash commits and reveals with the
same salt. Every transition is a conditional UPDATE (`WHERE phase IN (...)`), so repeating one is a no-op.
The journal may lag the chain (a crash after a transaction was mined, before it was recorded); the daemon
checks the chain before each commit and reveal, and catches the journal up.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from hashgrid.errors import ConfigError

SCHEMA_VERSION = 3  # 2: runtime_class; 3: the outbox of unacknowledged reports (older ones upgrade)


class Phase(StrEnum):
    RECEIVED = "received"
    RUNNING = "running"
    EXECUTED = "executed"
    COMMITTED = "committed"
    REVEALED = "revealed"
    REFUSED = "refused"
    FAILED = "failed"


TERMINAL = frozenset({Phase.REVEALED, Phase.REFUSED, Phase.FAILED})
OPEN = frozenset(Phase) - TERMINAL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id       INTEGER PRIMARY KEY,
    phase         TEXT NOT NULL,
    salt          TEXT NOT NULL,
    spec_hash     TEXT,
    source        TEXT,
    result_hash   TEXT,
    usage         TEXT,
    log_path      TEXT,
    report_sha256 TEXT,
    commit_tx     TEXT,
    reveal_tx     TEXT,
    reason        TEXT,
    runtime_class TEXT,
    runs          INTEGER NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_phase ON tasks (phase);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending',
    attempts   INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    error      TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, id);
CREATE INDEX IF NOT EXISTS outbox_task ON outbox (task_id, state);
"""


@dataclass(frozen=True)
class Entry:
    """One task as journaled."""

    task_id: int
    phase: Phase
    salt: bytes
    spec_hash: str | None
    source: str | None
    result_hash: bytes | None
    usage: dict[str, Any] | None
    log_path: str | None
    report_sha256: str | None
    commit_tx: str | None
    reveal_tx: str | None
    reason: str | None
    runs: int
    runtime_class: str | None = None  # the class the marketplace recorded: run in it or refuse

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        return cls(
            task_id=int(row["task_id"]), phase=Phase(row["phase"]), salt=bytes.fromhex(row["salt"]),
            spec_hash=row["spec_hash"], source=row["source"],
            result_hash=bytes.fromhex(row["result_hash"]) if row["result_hash"] else None,
            usage=json.loads(row["usage"]) if row["usage"] else None, log_path=row["log_path"],
            report_sha256=row["report_sha256"], commit_tx=row["commit_tx"], reveal_tx=row["reveal_tx"],
            reason=row["reason"], runs=int(row["runs"]), runtime_class=row["runtime_class"])


class Journal:
    """One SQLite file per provider state dir, shared by the loop and its worker threads (one connection,
    serialised by a lock; each statement commits on its own, so a crash loses at most the one in flight)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # re-entrant: a transaction() holds it across several statements
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed transition survives power loss
        self._db.executescript(_SCHEMA)
        stored = self.get_meta("schema_version")
        if stored in ("1", "2"):  # before runtime classes (1) or the outbox (2, created by _SCHEMA above)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
            if "runtime_class" not in columns:
                self._db.execute("ALTER TABLE tasks ADD COLUMN runtime_class TEXT")
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif stored is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(stored) != SCHEMA_VERSION:
            raise ConfigError(f"journal {self.path} has schema {stored}; this daemon reads {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements of this thread inside the block commit together or not at all (e.g. a run's result and
        the reports that must reach the marketplace); other threads wait for the block to end."""
        with self._lock:
            if self._db.in_transaction:  # nested: the outer block commits
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def execute(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """One statement under the journal's lock (for the outbox, which shares this file); its rows."""
        with self._lock:
            cursor = self._db.execute(sql, tuple(params))
            return cursor.fetchall()

    # ------------------------------------------------------------------ meta (feed cursors, bindings)
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def bind(self, key: str, value: str) -> None:
        """Tie the journal to one deployment/provider: a journal of another escrow or key is refused."""
        current = self.get_meta(key)
        if current is None:
            self.set_meta(key, value)
        elif current.lower() != value.lower():
            raise ConfigError(f"journal {self.path} belongs to {key} {current}, not {value}; use another "
                              "state dir for another deployment or key")

    # ------------------------------------------------------------------ reads
    def get(self, task_id: int) -> Entry | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else Entry.from_row(row)

    def in_phase(self, *phases: Phase) -> list[Entry]:
        """Entries in any of `phases`, oldest task first."""
        marks = ",".join("?" * len(phases))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM tasks WHERE phase IN ({marks}) ORDER BY task_id",
                                    [str(p) for p in phases]).fetchall()
        return [Entry.from_row(row) for row in rows]

    def all(self) -> list[Entry]:
        return self.in_phase(*Phase)

    # ------------------------------------------------------------------ transitions
    def add(self, task_id: int, *, source: str, spec_hash: str | None = None,
            runtime_class: str | None = None) -> bool:
        """Record a new assignment as received, drawing its salt; False (and nothing changed) if known."""
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO tasks (task_id, phase, salt, spec_hash, source, runtime_class, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, str(Phase.RECEIVED), secrets.token_bytes(32).hex(), spec_hash, source,
                 runtime_class, now, now))
        return cursor.rowcount == 1

    def _move(self, task_id: int, to: Phase, frm: Iterable[Phase], **fields: Any) -> bool:
        sets = ["phase = ?", "updated_at = ?"] + [f"{name} = ?" for name in fields]
        values: list[Any] = [str(to), time.time(), *fields.values()]
        sources = [str(p) for p in frm]
        marks = ",".join("?" * len(sources))
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE tasks SET {', '.join(sets)} WHERE task_id = ? AND phase IN ({marks})",
                [*values, task_id, *sources])
        return cursor.rowcount == 1

    def mark_running(self, task_id: int) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE tasks SET phase = ?, runs = runs + 1, reason = NULL, updated_at = ? "
                "WHERE task_id = ? AND phase = ?",
                (str(Phase.RUNNING), time.time(), task_id, str(Phase.RECEIVED)))
        return cursor.rowcount == 1

    def requeue(self, task_id: int, reason: str | None = None) -> bool:
        """A run that was cancelled or interrupted goes back to received (a restart re-runs it)."""
        return self._move(task_id, Phase.RECEIVED, [Phase.RUNNING], reason=reason)

    def requeue_interrupted(self) -> list[int]:
        """At start-up: tasks left `running` by a crash are received again."""
        interrupted = [entry.task_id for entry in self.in_phase(Phase.RUNNING)]
        for task_id in interrupted:
            self.requeue(task_id, "interrupted by a restart")
        return interrupted

    def note(self, task_id: int, reason: str) -> None:
        """Why an open task is waiting (shown by status; no phase change)."""
        with self._lock:
            self._db.execute("UPDATE tasks SET reason = ?, updated_at = ? WHERE task_id = ?",
                             (reason, time.time(), task_id))

    def record_execution(self, task_id: int, *, result_hash: bytes, usage: dict[str, Any], log_path: str,
                         report_sha256: str | None) -> bool:
        """running -> executed with the result to commit; the salt stays the one drawn at receipt."""
        return self._move(task_id, Phase.EXECUTED, [Phase.RUNNING, Phase.RECEIVED],
                          result_hash=result_hash.hex(), usage=json.dumps(usage, sort_keys=True),
                          log_path=log_path, report_sha256=report_sha256, reason=None)

    def mark_committed(self, task_id: int, tx_hash: str | None) -> bool:
        return self._move(task_id, Phase.COMMITTED, [Phase.EXECUTED], commit_tx=tx_hash)

    def mark_revealed(self, task_id: int, tx_hash: str | None) -> bool:
        return self._move(task_id, Phase.REVEALED, [Phase.COMMITTED], reveal_tx=tx_hash)

    def refuse(self, task_id: int, reason: str) -> bool:
        """Refused by policy before anything ran (the reason goes back to the marketplace)."""
        return self._move(task_id, Phase.REFUSED, [Phase.RECEIVED, Phase.RUNNING], reason=reason)

    def fail(self, task_id: int, reason: str) -> bool:
        """Given up: cannot run, window closed, task settled or expired without us."""
        return self._move(task_id, Phase.FAILED, OPEN, reason=reason)
