"""The ``emag-dq-check`` flow: the data-quality checkpoint against the database alone, on its own schedule."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger
from prefect.states import Failed

from emag_sync.options import Accounts
from emag_sync.run_row import DqStatus
from expectations.results import DQResult
from expectations.suites import DEFAULT_REJECT_THRESHOLD
from tasks.alerts import report_dq_warnings
from tasks.data_quality import check_account_quality_task
from tasks.prepare_database import prepare_database_task


@flow(name="emag-dq-check", log_prints=False)
def emag_dq_check(
    accounts: Accounts = "both", reject_threshold: float = DEFAULT_REJECT_THRESHOLD, seller: str | None = None
) -> dict[str, str] | State[Any]:
    """Check the named accounts (``all``, ``both``, names) as loaded now; Failed when a critical expectation
    fails."""
    logger = get_run_logger()
    prepared = prepare_database_task(accounts, seller, return_state=True)
    if prepared.is_failed():
        return Failed(message=prepared.message)
    statuses: dict[str, str] = {}
    failures: list[str] = []
    results: list[DQResult] = []
    for account in prepared.result():  # each account checked, whatever the others' outcome
        state = check_account_quality_task(
            account, None, reject_threshold=reject_threshold, return_state=True
        )
        if state.is_failed():
            failures.append(state.message or f"{account.title}: data quality failed")
            statuses[account.name] = DqStatus.FAILED
            continue
        result: DQResult = state.result()
        results.append(result)
        statuses[account.name] = result.status
        logger.info("%s", result.message)
    report_dq_warnings(results)  # one notification per run when any warning fired
    if failures:
        return Failed(message="; ".join(failures))
    return statuses
