"""Alembic: `alembic -c marketplace/alembic.ini upgrade head` works on SQLite and PostgreSQL, the migrated
schema is exactly what the models declare (the API's, the jobs' and billing's tables: no pending
autogenerate diff, same primary keys), downgrade/upgrade round-trips, and 0002 adopts the tables a 0001
database got at runtime before the migrations made them."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, Table, inspect, text

from billing.journal import BILLING_METADATA
from marketplace.db import init_db, make_engine, schema_metadata
from marketplace.indexer.tables import JOBS_METADATA

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = [sys.executable, "-m", "alembic", "-c", str(ROOT / "marketplace" / "alembic.ini")]
# the tables 0002 adds: created at runtime (ensure_tables, SettlementJournal.create_table) before it existed
TABLES_0002 = {"matching_claim", "job_lease", "replica_replacement", "provider_totals", "billing_settlement"}


def _alembic(db_url: str, *args: str) -> None:
    subprocess.run(
        [*ALEMBIC, "-x", f"db_url={db_url}", *args], check=True, cwd=ROOT, timeout=120, capture_output=True
    )


def _declared() -> dict[str, Table]:
    return {name: table for metadata in schema_metadata() for name, table in metadata.tables.items()}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _version(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _assert_matches_models(engine: Engine) -> None:
    declared = _declared()
    assert _tables(engine) == set(declared) | {"alembic_version"}
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, schema_metadata())  # type: ignore[arg-type]  # a list works too
    assert diff == [], f"models and migrations differ: {diff}"
    inspector = inspect(engine)
    for name, table in declared.items():  # autogenerate does not compare primary keys
        assert inspector.get_pk_constraint(name)["constrained_columns"] == [c.name for c in table.primary_key]


def test_upgrade_head_from_cli_matches_models(db_url: str) -> None:
    _alembic(db_url, "upgrade", "head")
    engine = make_engine(db_url)
    try:
        assert _tables(engine) >= TABLES_0002
        _assert_matches_models(engine)
    finally:
        engine.dispose()


def test_init_db_from_empty_matches_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        init_db(engine)  # the in-process path the API, the jobs and the CLI use; nothing else makes tables
        _assert_matches_models(engine)
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    _alembic(db_url, "upgrade", "head")
    engine = make_engine(db_url)
    try:
        _alembic(db_url, "downgrade", "0001")
        assert _version(engine) == "0001"
        assert not TABLES_0002 & _tables(engine)
        assert "task" in _tables(engine)
        _alembic(db_url, "downgrade", "base")
        assert _tables(engine) <= {"alembic_version"}
        init_db(engine)  # the in-process path the app uses
        init_db(engine)  # idempotent at head
        _assert_matches_models(engine)
    finally:
        engine.dispose()


def test_0002_keeps_tables_made_at_runtime(db_url: str) -> None:
    """A database at 0001 whose jobs and journal already created their tables (the code before 0002): the
    upgrade keeps them and their rows, and the schema ends up exactly the models'."""
    _alembic(db_url, "upgrade", "0001")
    engine = make_engine(db_url)
    try:
        owned = [*JOBS_METADATA.sorted_tables, *BILLING_METADATA.sorted_tables]
        runtime = [table for table in owned if table.name in TABLES_0002]
        assert {t.name for t in runtime} == TABLES_0002
        for table in runtime:
            table.create(engine)
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO job_lease (name, holder, expires_at) VALUES ('indexer', 'w1', :at)"),
                {"at": datetime(2026, 1, 1, tzinfo=UTC)},
            )
        _alembic(db_url, "upgrade", "0002")
        assert _version(engine) == "0002"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT holder FROM job_lease WHERE name = 'indexer'")).scalar() == "w1"
        init_db(engine)  # on to head (later revisions)
        _assert_matches_models(engine)
    finally:
        engine.dispose()
