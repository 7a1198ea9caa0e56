"""The database as a flow's first step: the embedded PostgreSQL started if configured so, the schema in place."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.db import engine_from_settings
from emag_sync.settings import get_settings


@task(name="prepare-database", cache_policy=NO_CACHE)
def prepare_database() -> None:
    """Start the embedded PostgreSQL when configured so, and create the schema if missing."""
    engine_from_settings(get_settings()).dispose()
