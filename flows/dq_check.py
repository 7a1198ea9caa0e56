"""The ``emag-dq-check`` flow: the data-quality checkpoint against the database alone, on its own schedule."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger
from prefect.states import Failed

from emag_sync.options import Accounts
from expectations.suites import DEFAULT_REJECT_THRESHOLD
from tasks.alerts import report_dq_warnings
from tasks.data_quality import DQVerdicts, check_accounts_quality_task
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
    checked = prepared.result()
    quality = check_accounts_quality_task(
        [(account, None) for account in checked], reject_threshold=reject_threshold, return_state=True
    )  # every account in one checkpoint run, each with its own verdict
    verdicts = DQVerdicts.of(checked, quality)
    for result in verdicts.results.values():
        logger.info("%s", result.message)
    report_dq_warnings(list(verdicts.results.values()))  # one notification per run when any warning fired
    if verdicts.failures:
        return Failed(message="; ".join(verdicts.failures.values()))
    return {name: str(status) for name, status in verdicts.status.items()}
