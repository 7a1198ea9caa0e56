"""The schema's Alembic migrations, shipped inside the package (``emag_sync.schema_version`` runs them)."""
