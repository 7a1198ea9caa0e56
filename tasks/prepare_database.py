"""A step of its own for flows that need only the database: embedded server started, schema in place."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.db import engine_from_settings
from emag_sync.settings import Settings, get_settings
from tasks.outcomes import run_step


def prepare_database(settings: Settings) -> None:
    """Start the embedded PostgreSQL when configured so, and create the schema if missing."""
    engine_from_settings(settings).dispose()


@task(name="prepare-database", task_run_name="prepare-database", cache_policy=NO_CACHE)
def prepare_database_task() -> None:
    """Prefect task: the configured database, ready; Failed in one line when it cannot be reached."""
    return run_step(prepare_database, get_settings())
