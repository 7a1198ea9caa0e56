"""The schema's Alembic migrations, shipped inside the package (``emag_sync.schema_version`` runs them).

``context_options`` is what env.py configures Alembic with, and what the test comparing the SQLAlchemy
tables with a migrated database uses: the same schema filter and comparisons in both places.
"""

from __future__ import annotations

from typing import Any

from emag_sync.schema import SCHEMA, metadata

VERSION_TABLE = "alembic_version"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Schema ``app`` alone: Prefect's, GX's and the user's own schemas are not emag-sync's."""
    if type_ == "schema":
        return name == SCHEMA
    return True


def context_options() -> dict[str, Any]:
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
