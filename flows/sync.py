"""The ``emag-product-sync`` flow: per account extract → transform → load, then the data-quality check."""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime
from prefect.futures import PrefectFuture

from emag_sync.errors import EmagSyncError
from emag_sync.settings import AccountType, get_settings, parse_accounts
from expectations.checkpoint import check_account_quality
from tasks.database import prepare_database
from tasks.reporting import publish_summary, summary_markdown
from tasks.secrets import resolve_account_config
from tasks.sync_account import AccountSummary, SyncOptions, sync_account_task


class SyncFailedError(EmagSyncError):
    """At least one account failed to sync or failed a critical data-quality expectation."""


@flow(name="emag-product-sync", log_prints=False)
def emag_product_sync(
    accounts: str = "both",
    pages_per_batch: int = 5,
    items_per_page: int = 100,
    resume: bool = False,
    wait_for_lock: bool = False,
) -> list[AccountSummary]:
    """Sync the eMAG catalogue of MAIN, FBE or both into PostgreSQL and check what was loaded.

    A rerun (the UI's Retry, or ``resume=True``) continues after the last committed batch. Another sync
    of the same account running makes this one fail at once, or wait for it with ``wait_for_lock``.
    """
    logger = get_run_logger()
    targets = parse_accounts(accounts)
    settings = get_settings()
    for account in targets:  # missing credentials are reported by name before any request
        resolve_account_config(settings, account)
    prepare_database()

    options = SyncOptions(
        pages_per_batch=pages_per_batch,
        items_per_page=items_per_page,
        resume=resume,
        wait_for_lock=wait_for_lock,
    )
    futures: dict[AccountType, PrefectFuture[AccountSummary]] = {
        account: sync_account_task.submit(account, options, runtime.flow_run.id) for account in targets
    }
    summaries, dq_status, failures = [], {}, {}
    for account, future in futures.items():
        try:
            summaries.append(future.result())
        except Exception as exc:  # the other account's committed work stays; report both
            failures[account.value] = _naming(account, exc)
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
        logger.info("%s: data-quality report (Data Docs): %s", account.label, quality.data_docs_index)

    publish_summary(summary_markdown(summaries, dq_status, failures))
    if failures:
        raise SyncFailedError("; ".join(failures.values()))
    return summaries


def _naming(account: AccountType, exc: Exception) -> str:
    """The error as it is when it already starts with the account (the project's errors do), else prefixed."""
    message = str(exc)
    if message.lower().startswith(account.value):
        return message
    return f"{account.value}: {type(exc).__name__}: {message}"
