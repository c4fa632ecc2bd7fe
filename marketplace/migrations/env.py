"""Alembic environment: migrates the connection handed in by `marketplace.db.init_db`, or the database named
by `-x db_url=...`, sqlalchemy.url, or HASHGRID settings (batch mode so ALTERs work on SQLite)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from marketplace.db import schema_metadata

target_metadata = schema_metadata()  # the API's models, the jobs' tables, billing's journal


def _url() -> str:
    from hashgrid.config import Settings
    from marketplace.db import database_url

    url = context.get_x_argument(as_dictionary=True).get("db_url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    return url or database_url(Settings())


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    from marketplace.db import make_engine

    engine = make_engine(_url())
    with engine.begin() as conn:
        _configure(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
