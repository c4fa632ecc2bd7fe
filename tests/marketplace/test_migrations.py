"""Alembic: `alembic -c marketplace/alembic.ini upgrade head` works on SQLite and PostgreSQL, the migrated
schema matches the models (no pending autogenerate diff), and downgrade/upgrade round-trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import marketplace.models  # noqa: F401
from marketplace.db import init_db, make_engine

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = [sys.executable, "-m", "alembic", "-c", str(ROOT / "marketplace" / "alembic.ini")]


def _alembic(db_url: str, *args: str) -> None:
    subprocess.run(
        [*ALEMBIC, "-x", f"db_url={db_url}", *args], check=True, cwd=ROOT, timeout=120, capture_output=True
    )


def test_upgrade_head_from_cli_matches_models(db_url: str) -> None:
    _alembic(db_url, "upgrade", "head")
    engine = make_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(SQLModel.metadata.tables) <= tables
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, SQLModel.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    _alembic(db_url, "upgrade", "head")
    _alembic(db_url, "downgrade", "base")
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        init_db(engine)  # the in-process path the app uses
        init_db(engine)  # idempotent at head
        assert "task" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
