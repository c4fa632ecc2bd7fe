"""The marketplace's database: one engine per process from Settings, sessions, and migrations to head.

SQLite (the embedded default, at <state_dir>/marketplace.db) runs in WAL mode with a busy timeout so API
threads, the indexer and jobs can share it; PostgreSQL is used through psycopg 3 (postgresql+psycopg://).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, event
from sqlalchemy.engine import make_url
from sqlmodel import Session, create_engine

from hashgrid.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 15_000

# A request's session holds its connection until the request ends, and FastAPI still needs a threadpool slot
# to validate a sync route's response. With fewer connections than threadpool slots, a burst of sync requests
# fills every slot with handlers waiting for a connection while the connections' holders wait for a slot: a
# deadlock broken only by the pool timeout (30 s, then a 500). So the API caps its threadpool at API_THREADS
# (app.py) and every engine has room for all of them plus the threads that are not requests.
API_THREADS = 16  # sync route handlers running at once in one API process
BACKGROUND_CONNECTIONS = 8  # the spec writer, the in-process jobs' lanes, the nonce purger, headroom
POOL_CONNECTIONS = API_THREADS + BACKGROUND_CONNECTIONS


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL: plain postgresql:// URLs are routed to the psycopg 3 driver."""
    url = settings.database
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


class GatedConnection(sqlite3.Connection):
    """A SQLite connection that takes its engine's write gate before its transaction's first write and gives
    it back when the transaction ends (commit, rollback, close).

    SQLite has one writer; a second writer in the same process used to wait in SQLite's busy handler, which
    sleeps in steps of 1, 2, 5, 10, 15, 20, 25... ms and retries, so a write that found the lock taken waited
    8-40 ms for a lock that was free after one. Queued on a Python lock instead, it runs the moment the lock
    is given back. Other processes (more uvicorn workers, Celery) still meet the busy handler."""

    gate: threading.Semaphore  # set per engine (see _gated_factory)
    _holds_gate = False

    def take_gate(self) -> None:
        if self._holds_gate:
            return
        if not self.gate.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            # as SQLite itself would after its busy timeout: two open write transactions in one thread
            raise sqlite3.OperationalError("database is locked (another write transaction of this process)")
        self._holds_gate = True

    def _give_gate(self) -> None:
        if self._holds_gate:
            self._holds_gate = False
            self.gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            if not self.in_transaction:
                self._give_gate()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._give_gate()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._give_gate()


def _gated_factory() -> type[GatedConnection]:
    """A GatedConnection class with a gate of its own: one per engine (one database file per engine)."""
    return type("GatedConnection", (GatedConnection,), {"gate": threading.Semaphore(1)})


def _take_gate_before_writes(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
    connection = cursor.connection
    if (isinstance(connection, GatedConnection) and not connection._holds_gate
            and statement.lstrip()[:7].upper().startswith(WRITES)):
        connection.take_gate()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets its directory created and its pragmas set on every connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs = {"pool_size": POOL_CONNECTIONS, "max_overflow": 0, **kwargs}
        # (an in-memory database keeps SQLAlchemy's single shared connection: there is no pool to size)
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                        "factory": _gated_factory()}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "before_cursor_execute", _take_gate_before_writes)
        return engine
    # PostgreSQL: 10 kept open, the rest opened on demand and closed when returned
    kwargs = {"pool_size": 10, "max_overflow": POOL_CONNECTIONS - 10, **kwargs}
    return create_engine(url, pool_pre_ping=True, **kwargs)


def engine_from_settings(settings: Settings) -> Engine:
    return make_engine(database_url(settings))


def schema_metadata() -> list[MetaData]:
    """Every table the marketplace's database holds, by owner: the API's models, the background jobs' tables
    and billing's settlement journal. The migrations create exactly these (Alembic compares against them)."""
    from sqlmodel import SQLModel

    import marketplace.models  # noqa: F401  (registers the API's tables on SQLModel.metadata)
    from billing.journal import BILLING_METADATA
    from marketplace.indexer.tables import JOBS_METADATA

    return [SQLModel.metadata, JOBS_METADATA, BILLING_METADATA]


def alembic_config(url: str | None = None) -> Any:
    """An Alembic Config pointing at marketplace/migrations (the same as marketplace/alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def init_db(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent: a database at head is left as is). This is the
    only place the marketplace's tables are created, the jobs' and billing's included."""
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def session_scope(engine: Engine) -> Iterator[Session]:
    """Yield one session, closed afterwards (uncommitted work is rolled back)."""
    with Session(engine, expire_on_commit=False) as session:
        yield session
