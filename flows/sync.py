"""The ``emag-product-sync`` flow: preflight, then per account extract → transform → load, then check."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger, runtime
from prefect.futures import as_completed
from prefect.states import Failed

from emag_sync.accounts import AccountType, parse_accounts
from emag_sync.options import Accounts, SyncOptions
from emag_sync.run_row import DqStatus, RunRow
from expectations.checkpoint import preload as preload_great_expectations
from expectations.results import DQResult
from tasks.alerts import report_dq_warnings
from tasks.artifacts import failed_runs, publish_summary_task, summary_markdown
from tasks.data_quality import check_account_quality_task
from tasks.preflight import Preflight, preflight_task
from tasks.sync_account import sync_account_task


@flow(name="emag-product-sync", log_prints=False)
def emag_product_sync(
    accounts: Accounts = "both", options: SyncOptions = SyncOptions()
) -> list[RunRow] | State[Any]:
    """Sync the eMAG catalogue of MAIN, FBE or both into PostgreSQL and check what was loaded.

    A rerun (the UI's Retry, or ``options.resume``) continues after the last committed batch. Another sync
    of the same account running makes this one fail at once, or wait for it with ``options.wait_for_lock``.
    """
    logger = get_run_logger()
    targets = parse_accounts(accounts)
    checked = preflight_task(targets, options.wait_for_lock, return_state=True)
    if checked.is_failed():
        return Failed(message=checked.message)
    preflight: Preflight = checked.result()

    preload_great_expectations()  # its import (seconds) overlaps the reads, which mostly wait on eMAG
    futures = {
        sync_account_task.submit(
            account, options, runtime.flow_run.id, preflight.counts.get(account)
        ): account
        for account in targets
    }
    runs: list[RunRow] = []
    failures: dict[AccountType, str] = {}
    dq_status: dict[str, str] = {}
    dq_results: list[DQResult] = []
    # Each account is checked as soon as its own read ends, while the other may still be reading (the
    # limiters pace requests on when they really leave, so the check's CPU work cannot bunch them up).
    for future in as_completed(list(futures)):  # the other account's committed work stays; report both
        account = futures[future]
        future.wait()  # keeps the task's own final state: unwaited, .state asks the API, which may lag behind
        if future.state.is_failed():
            failures[account] = future.state.message or f"{account.value}: failed"
            continue
        run: RunRow = future.result()
        runs.append(run)
        quality = check_account_quality_task(run.kind, run.id, return_state=True)
        if quality.is_failed():  # a critical expectation failed, or the checkpoint could not run
            failures[account] = quality.message or f"{account.value}: data quality failed"
            dq_status[run.account_type] = DqStatus.FAILED
            continue
        result: DQResult = quality.result()
        dq_results.append(result)
        dq_status[run.account_type] = result.status
        logger.info(
            "%s: %s inserted, %s updated, %s unchanged, %s rejected, %s deactivated; data quality %s",
            run.account_type, run.rows_inserted, run.rows_updated, run.rows_unchanged,
            run.rows_rejected, run.rows_deactivated, result.status,
        )  # fmt: skip

    unsynced = [account for account in failures if account not in {run.kind for run in runs}]
    runs += failed_runs(unsynced, runtime.flow_run.id)  # the summary then has a row for every account
    runs.sort(key=lambda run: targets.index(run.kind))
    report_dq_warnings(dq_results)
    publish_summary_task(summary_markdown(runs, dq_status, {a.value: m for a, m in failures.items()}))
    if failures:
        return Failed(message="; ".join(failures.values()))
    return runs
