"""Runs the sync flow in this process for the command line: checks first, a progress bar, a summary."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select

from emag_sync.console import console, err_console, sync_progress, sync_summary_table
from emag_sync.db import describe, engine_from_settings
from emag_sync.schema import sync_runs
from emag_sync.settings import AccountConfig, Settings, parse_accounts


@dataclass(frozen=True)
class SyncOutcome:
    """What the command line reports: success, and the error message when not."""

    ok: bool
    error: str | None


def preflight(settings: Settings, accounts: str) -> Engine:
    """Fail fast, naming the setting, before any write: accounts, credentials, database, then the API."""
    from tasks.secrets import resolve_account_config

    configs = [resolve_account_config(settings, account) for account in parse_accounts(accounts)]
    engine = engine_from_settings(settings)
    try:
        for config in configs:
            check_api(settings, config)
    except BaseException:
        engine.dispose()
        raise
    return engine


def check_api(settings: Settings, config: AccountConfig) -> None:
    """One ``count`` per account (paced like the sync's requests): a wrong API URL, a refused password
    or a non-whitelisted IP fails here in one line that names the setting, before a flow run starts."""
    from emag_sync.errors import ConfigError, EmagApiError, EmagAuthError, EmagUnavailableError
    from tasks.client import EmagClient
    from tasks.shared_limit import shared_limiter_for

    label = config.account.label
    overridden = getattr(settings, f"emag_{config.account.value}_api_url") is not None
    setting = f"EMAG_{label}_API_URL" if overridden else "EMAG_API_URL"
    try:
        with EmagClient(config, limiter=shared_limiter_for(config)) as client:
            client.count()
    except EmagAuthError as exc:
        raise ConfigError(f"{exc}; check EMAG_{label}_USERNAME and EMAG_{label}_PASSWORD") from None
    except EmagApiError as exc:
        if isinstance(exc, EmagUnavailableError) and exc.status_code is not None:
            raise  # eMAG answered 5xx/429 through every retry: an outage, not a setting to fix
        raise ConfigError(f"{exc}; check {setting} ({config.api_url})") from None


def run_sync(
    settings: Settings,
    accounts: str,
    *,
    resume: bool = False,
    pages_per_batch: int = 5,
    items_per_page: int = 100,
    wait_for_lock: bool = False,
) -> SyncOutcome:
    """Run ``emag-product-sync`` in-process with a progress bar, then print the runs it made."""
    engine = preflight(settings, accounts)
    try:
        with engine.connect() as conn:
            last_run_id = conn.scalar(select(func.coalesce(func.max(sync_runs.c.id), 0))) or 0
        console.print(f"database: {describe(engine.url)}")
        from flows.sync import emag_product_sync

        error: str | None = None
        with sync_progress(parse_accounts(accounts)):
            try:
                emag_product_sync(
                    accounts=accounts,
                    pages_per_batch=pages_per_batch,
                    items_per_page=items_per_page,
                    resume=resume,
                    wait_for_lock=wait_for_lock,
                )
            except Exception as exc:
                error = str(exc) or type(exc).__name__
        console.print(sync_summary_table(engine, since_id=last_run_id))
        if error:
            err_console.print(f"[red]sync failed:[/red] {error}")
        return SyncOutcome(ok=error is None, error=error)
    finally:
        engine.dispose()
