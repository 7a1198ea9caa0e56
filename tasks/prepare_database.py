"""A step of its own for flows that need only the database: embedded server started, schema in place."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.accounts import Account
from emag_sync.db import engine_from_settings
from emag_sync.registry import resolve_accounts
from emag_sync.settings import Settings, get_settings
from tasks.outcomes import run_step


def prepare_database(settings: Settings, selection: str, seller: str | None = None) -> list[Account]:
    """Start the embedded PostgreSQL when configured so, bring the schema to head, and resolve the accounts
    ``selection`` names (``all``, ``both``, names; ConfigError listing the registered ones)."""
    engine = engine_from_settings(settings)
    try:
        return resolve_accounts(engine, selection, seller=seller, settings=settings)
    finally:
        engine.dispose()


@task(name="prepare-database", task_run_name="prepare-database", cache_policy=NO_CACHE)
def prepare_database_task(selection: str, seller: str | None = None) -> list[Account]:
    """Prefect task: the configured database ready and the accounts resolved; Failed in one line otherwise."""
    return run_step(prepare_database, get_settings(), selection, seller)
