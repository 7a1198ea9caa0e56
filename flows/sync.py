"""The ``emag-product-sync`` flow: preflight, then per account extract → transform → load, then check."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger, runtime
from prefect.states import Failed

from emag_sync.accounts import AccountType, parse_accounts
from emag_sync.options import Accounts, SyncOptions
from emag_sync.runs import DqStatus, RunRow
from expectations.checkpoint import DQResult
from tasks.alerts import report_dq_warnings
from tasks.artifacts import publish_summary_task, summary_markdown
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

    futures = {
        account: sync_account_task.submit(
            account, options, runtime.flow_run.id, preflight.counts.get(account)
        )
        for account in targets
    }
    runs: list[RunRow] = []
    failures: dict[AccountType, str] = {}
    for account, future in futures.items():  # the other account's committed work stays; report both
        future.wait()
        if future.state.is_failed():
            failures[account] = future.state.message or f"{account.value}: failed"
        else:
            runs.append(future.result())

    # Checked once every read is over: the check's CPU work would otherwise delay the other account's
    # requests and bunch them up against eMAG's rate limit.
    dq_status: dict[str, str] = {}
    dq_results: list[DQResult] = []
    for run in runs:
        quality = check_account_quality_task(run.account, run.id, return_state=True)
        if quality.is_failed():  # a critical expectation failed, or the checkpoint could not run
            failures[run.account] = quality.message or f"{run.account_type}: data quality failed"
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

    report_dq_warnings(dq_results)
    publish_summary_task(summary_markdown(runs, dq_status, {a.value: m for a, m in failures.items()}))
    if failures:
        return Failed(message="; ".join(failures.values()))
    return runs
