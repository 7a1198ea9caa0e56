"""Alembic's environment for emag-sync: schema ``app`` only, its version table inside it, each revision in
its own transaction. Run through ``emag_sync.schema_version``, which hands in the connection (online) or
the URL (offline, ``--sql``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from emag_sync.migrations import context_options
from emag_sync.schema import SCHEMA


def run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True, **context_options()
    )
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes["connection"]
    # The version table lives in schema app, so the schema exists before Alembic looks for it.
    if connection.scalar(text("SELECT to_regnamespace(:s) IS NULL"), {"s": SCHEMA}):
        connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    # Ended here either way: inside a transaction of ours Alembic would run every revision in it (and the
    # caller's rollback would undo them all), not one transaction per revision.
    connection.commit()
    context.configure(connection=connection, **context_options())
    context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
