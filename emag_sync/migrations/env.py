"""Alembic's environment for emag-sync: schema ``app`` only, its version table inside it, each revision in
its own transaction. Run through ``emag_sync.schema_version``, which hands in the connection (online) or
the URL (offline, ``--sql``)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import text

from emag_sync.schema import SCHEMA, metadata

VERSION_TABLE = "alembic_version"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate compares schema ``app`` alone: Prefect's, GX's and the user's schemas are not ours."""
    if type_ == "schema":
        return name == SCHEMA
    return True


def _options() -> dict[str, Any]:
    return {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "version_table_schema": SCHEMA,
        "include_schemas": True,
        "include_name": include_name,
        # PostgreSQL DDL is transactional: a revision that fails leaves the database at the one before.
        "transaction_per_migration": True,
        "compare_type": True,
        "compare_server_default": True,
    }


def run_offline() -> None:
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), literal_binds=True, **_options())
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes["connection"]
    # The version table lives in schema app, so the schema exists before Alembic looks for it.
    if connection.scalar(text("SELECT to_regnamespace(:s) IS NULL"), {"s": SCHEMA}):
        connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        connection.commit()
    context.configure(connection=connection, **_options())
    context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
