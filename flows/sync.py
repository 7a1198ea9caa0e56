"""The ``emag-product-sync`` flow: per account extract → transform → load, then the data-quality check."""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from emag_sync.db import engine_from_settings
from emag_sync.errors import EmagSyncError
from emag_sync.settings import AccountType, get_settings, parse_accounts
from expectations.checkpoint import check_account_quality
from tasks.reporting import publish_summary, summary_markdown
from tasks.secrets import resolve_account_config
from tasks.sync_account import AccountSummary, SyncOptions, sync_account_task


class SyncFailedError(EmagSyncError):
    """At least one account failed to sync or failed a critical data-quality expectation."""


@task(name="prepare-database", cache_policy=NO_CACHE)
def prepare_database() -> None:
    """Start the embedded PostgreSQL when configured so, and create the schema if missing."""
    engine_from_settings(get_settings()).dispose()


@flow(name="emag-product-sync", log_prints=False)
def emag_product_sync(
    accounts: str = "both",
    pages_per_batch: int = 5,
    items_per_page: int = 100,
    resume: bool = False,
) -> list[AccountSummary]:
    """Sync the eMAG catalogue of MAIN, FBE or both into PostgreSQL and check what was loaded.

    A rerun (the UI's Retry, or ``resume=True``) continues after the last committed batch.
    """
    logger = get_run_logger()
    targets = parse_accounts(accounts)
    settings = get_settings()
    for account in targets:  # missing credentials are reported by name before any request
        resolve_account_config(settings, account)
    prepare_database()

    options = SyncOptions(pages_per_batch=pages_per_batch, items_per_page=items_per_page, resume=resume)
    futures: dict[AccountType, PrefectFuture[AccountSummary]] = {
        account: sync_account_task.submit(account, options, runtime.flow_run.id) for account in targets
    }
    summaries, dq_status, failures = [], {}, {}
    for account, future in futures.items():
        try:
            summaries.append(future.result())
        except Exception as exc:  # the other account's committed work stays; report both
            failures[account.value] = f"{type(exc).__name__}: {exc}"
    # Checked once every read is over: the check's CPU work would otherwise delay the other account's
    # requests and bunch them up against eMAG's rate limit.
    for summary in summaries:
        account = AccountType(summary.account)
        quality = check_account_quality(account, summary.run_id)
        dq_status[account.value] = quality.status
        if quality.critical_failures:
            failures[account.value] = quality.message
        logger.info(
            "%s: %s inserted, %s updated, %s unchanged, %s rejected, %s deactivated; data quality %s",
            account.label, summary.inserted, summary.updated, summary.unchanged,
            summary.rejected, summary.deactivated, quality.status,
        )  # fmt: skip

    publish_summary(summary_markdown(summaries, dq_status, failures))
    if failures:
        raise SyncFailedError("; ".join(f"{name}: {error}" for name, error in failures.items()))
    return summaries
