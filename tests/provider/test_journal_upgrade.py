"""A journal written before runtime classes (schema 1) opens in place: it gains the runtime class column and
the report outbox (schema 3), its rows are kept, and new assignments record their class."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from provider.journal import SCHEMA_VERSION, Journal, Phase

V1 = """
CREATE TABLE tasks (task_id INTEGER PRIMARY KEY, phase TEXT NOT NULL, salt TEXT NOT NULL, spec_hash TEXT,
    source TEXT, result_hash TEXT, usage TEXT, log_path TEXT, report_sha256 TEXT, commit_tx TEXT,
    reveal_tx TEXT, reason TEXT, runs INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO tasks (task_id, phase, salt, created_at, updated_at) VALUES (7, 'received', '00', 1.0, 1.0);
"""


def test_a_version_1_journal_gains_the_runtime_class(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(V1)
    journal = Journal(path)
    try:
        assert journal.get_meta("schema_version") == str(SCHEMA_VERSION) == "3"
        assert journal.execute("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0
        (old,) = journal.in_phase(Phase.RECEIVED)
        assert (old.task_id, old.runtime_class) == (7, None)
        assert journal.add(8, source="test", runtime_class="runsc")
        assert {e.task_id: e.runtime_class for e in journal.in_phase(Phase.RECEIVED)} == {7: None, 8: "runsc"}
    finally:
        journal.close()
    again = Journal(path)  # a second open of the upgraded file changes nothing
    again.close()
