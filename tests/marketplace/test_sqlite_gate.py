"""SQLite's write gate (marketplace/db.py, GatedConnection): a process's writers queue on a Python lock and
run the moment the holder commits, instead of sleeping in SQLite's busy handler (1, 2, 5, 10... ms steps).

Each test turns the busy handler off on the waiting connection (busy_timeout=0): without the gate its write
would fail at once with "database is locked"; with it, the write waits for the gate and succeeds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from marketplace import db

JOIN_S = 10.0  # a generous bound on threads that should be done at once; reaching it fails the test


class ObservedGate:
    """The engine's semaphore, with an event set when a second writer starts waiting on it."""

    def __init__(self, inner: threading.Semaphore) -> None:
        self.inner = inner
        self.waiting = threading.Event()

    def acquire(self, timeout: float | None = None) -> bool:
        if self.inner.acquire(blocking=False):
            return True
        self.waiting.set()
        return self.inner.acquire(timeout=timeout)

    def release(self) -> None:
        self.inner.release()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE item (name TEXT PRIMARY KEY)"))
    yield engine
    engine.dispose()


def observe(engine: Engine) -> ObservedGate:
    raw = engine.raw_connection()
    try:
        cls = type(raw.dbapi_connection)
    finally:
        raw.close()
    assert issubclass(cls, db.GatedConnection)
    gate = ObservedGate(cls.gate)
    cls.gate = gate  # type: ignore[assignment]
    return gate


def write_without_busy_handler(engine: Engine, name: str, errors: list[BaseException]) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("PRAGMA busy_timeout=0"))
            connection.execute(text("INSERT INTO item VALUES (:name)"), {"name": name})
            connection.commit()
    except BaseException as exc:  # reported by the test's thread
        errors.append(exc)


def names(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(text("SELECT name FROM item")).scalars())


def test_second_writer_runs_once_the_first_commits(engine: Engine) -> None:
    gate = observe(engine)
    errors: list[BaseException] = []
    with engine.connect() as first:
        first.execute(text("INSERT INTO item VALUES ('first')"))  # holds SQLite's write lock and the gate
        second = threading.Thread(target=write_without_busy_handler, args=(engine, "second", errors))
        second.start()
        assert gate.waiting.wait(JOIN_S), "the second writer never reached the gate"
        assert second.is_alive()
        first.commit()
    second.join(JOIN_S)
    assert not second.is_alive()
    assert errors == []
    assert names(engine) == ["first", "second"]


@pytest.mark.parametrize("end", ["rollback", "error", "return to pool"])
def test_gate_is_given_back_however_the_transaction_ends(engine: Engine, end: str) -> None:
    gate = observe(engine)
    errors: list[BaseException] = []
    second = threading.Thread(target=write_without_busy_handler, args=(engine, "second", errors))
    connection = engine.connect()
    connection.execute(text("INSERT INTO item VALUES ('first')"))
    second.start()
    assert gate.waiting.wait(JOIN_S)
    if end == "rollback":
        connection.rollback()
        connection.close()
    elif end == "error":
        with pytest.raises(Exception, match="UNIQUE"):
            connection.execute(text("INSERT INTO item VALUES ('first')"))
        connection.rollback()
        connection.close()
    else:
        connection.close()  # the pool rolls the open transaction back
    second.join(JOIN_S)
    assert not second.is_alive()
    assert errors == []
    assert names(engine) == ["second"]


def test_reads_do_not_wait_for_the_gate(engine: Engine) -> None:
    with engine.connect() as writer:
        writer.execute(text("INSERT INTO item VALUES ('pending')"))
        assert names(engine) == []  # WAL: a reader sees the last commit, without waiting
        writer.commit()
    assert names(engine) == ["pending"]


def test_two_write_transactions_in_one_thread_fail_as_sqlite_would(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    with engine.connect() as first, engine.connect() as second:
        first.execute(text("INSERT INTO item VALUES ('first')"))
        with pytest.raises(OperationalError, match="database is locked"):
            second.execute(text("INSERT INTO item VALUES ('second')"))
        first.commit()
    assert names(engine) == ["first"]
