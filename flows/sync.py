"""The ``emag-product-sync`` flow: preflight, then per account extract → transform → load, then one check
of every synced account."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger, runtime
from prefect.futures import PrefectFuture
from prefect.states import Failed

from emag_sync.accounts import Account
from emag_sync.options import Accounts, SyncOptions
from emag_sync.run_row import RunRow
from expectations.checkpoint import preload as preload_great_expectations
from tasks.alerts import report_account_synced, report_dq_warnings
from tasks.artifacts import (
    account_rows,
    failed_runs,
    publish_account_outcomes_task,
    publish_summary_task,
    summary_markdown,
)
from tasks.data_quality import DQVerdicts, check_accounts_quality_task
from tasks.preflight import Preflight, preflight_task
from tasks.sync_account import sync_account_task, synced_as_completed


@flow(name="emag-product-sync", log_prints=False)
def emag_product_sync(
    accounts: Accounts = "both", options: SyncOptions = SyncOptions(), seller: str | None = None
) -> list[RunRow] | State[Any]:
    """Sync the eMAG catalogue of the named accounts (``all``, ``both``, names) into PostgreSQL and check
    what was loaded; ``seller`` keeps that seller's accounts.

    A rerun (the UI's Retry, or ``options.resume``) continues after the last committed batch. Another sync
    of the same account running makes this one fail at once, or wait for it with ``options.wait_for_lock``.
    """
    logger = get_run_logger()
    flow_run_id = str(runtime.flow_run.id)
    checked = preflight_task(accounts, seller, options.wait_for_lock, flow_run_id, return_state=True)
    if checked.is_failed():
        return Failed(message=checked.message)
    preflight: Preflight = checked.result()
    targets = preflight.accounts
    for cause in preflight.failures.values():  # left out; the other accounts sync
        logger.error("%s", cause)

    preload_great_expectations()  # its import (seconds) overlaps the reads, which mostly wait on eMAG
    runs: list[RunRow] = []
    failures: dict[str, str] = dict(preflight.failures)  # by account name; those accounts do not sync

    def submit(account: Account) -> PrefectFuture[RunRow]:
        count = preflight.counts.get(account.name)
        return sync_account_task.submit(account, options, flow_run_id, count)

    for account, future in synced_as_completed(targets, submit):  # the others' committed work stays
        if future.state.is_failed():
            failures[account.name] = future.state.message or f"{account.title}: failed"
            continue
        runs.append(future.result())

    # One checkpoint for every synced account once their syncs are done: one Great Expectations run (one
    # Data Docs build) instead of one per account; a critical failure fails its account alone.
    run_ids = {run.account: run.id for run in runs}
    synced_accounts = [account for account in targets if account.name in run_ids]
    verdicts = DQVerdicts()
    if synced_accounts:
        quality = check_accounts_quality_task(
            [(account, run_ids[account.name]) for account in synced_accounts], return_state=True
        )
        verdicts = DQVerdicts.of(synced_accounts, quality)
    failures |= verdicts.failures
    for account in synced_accounts:  # each account's silence window starts again
        if account.name not in failures:
            report_account_synced(account, run_ids[account.name])
    for run in runs:
        logger.info(
            "%s: %s inserted, %s updated, %s unchanged, %s rejected, %s deactivated; data quality %s",
            run.account, run.rows_inserted, run.rows_updated, run.rows_unchanged,
            run.rows_rejected, run.rows_deactivated, verdicts.status[run.account],
        )  # fmt: skip

    unsynced = [account for account in targets if account.name in failures and account.name not in run_ids]

    runs += failed_runs(unsynced, flow_run_id)  # the summary then has a row for every account
    order = [account.name for account in targets]
    runs.sort(key=lambda run: order.index(run.account))
    report_dq_warnings(list(verdicts.results.values()))
    publish_summary_task(summary_markdown(runs, verdicts.status, failures))
    asked = [account.name for account in targets] + [name for name in preflight.failures if name not in order]
    publish_account_outcomes_task(
        account_rows(asked, failures, runs, verdicts.status)
    )  # what a sync-all parent reads
    if failures:
        return Failed(message="; ".join(failures.values()))
    return runs
