"""The ``emag-dq-check`` flow: the data-quality checkpoint against the database alone, on its own schedule."""

from __future__ import annotations

from prefect import flow, get_run_logger

from emag_sync.errors import DataQualityError
from emag_sync.settings import parse_accounts
from expectations.checkpoint import check_account_quality
from expectations.suites import DEFAULT_REJECT_THRESHOLD
from tasks.database import prepare_database


@flow(name="emag-dq-check", log_prints=False)
def emag_dq_check(
    accounts: str = "both", reject_threshold: float = DEFAULT_REJECT_THRESHOLD
) -> dict[str, str]:
    """Check MAIN, FBE or both as loaded now; ends Failed when a critical expectation fails."""
    logger = get_run_logger()
    prepare_database()
    results = [
        check_account_quality(account, None, reject_threshold=reject_threshold)
        for account in parse_accounts(accounts)
    ]
    for result in results:
        logger.info("%s (Data Docs: %s)", result.message, result.data_docs_index)
    failures = [result.message for result in results if result.critical_failures]
    if failures:
        raise DataQualityError("; ".join(failures))
    return {result.account.value: result.status for result in results}
