"""The data-quality step: one account's checkpoint against the database, its artifacts in the Prefect UI."""

from __future__ import annotations

from typing import cast

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.accounts import Account
from emag_sync.db import database_url
from emag_sync.escaping import markdown_text, markdown_url
from emag_sync.settings import get_settings
from expectations.checkpoint import run_checkpoint
from expectations.report import artifact_key, dq_markdown, report_link_text
from expectations.results import DQResult
from expectations.suites import DEFAULT_REJECT_THRESHOLD
from tasks.artifacts import record_in_prefect
from tasks.outcomes import run_step


def check_account_quality(
    account: Account, run_id: int | None = None, reject_threshold: float = DEFAULT_REJECT_THRESHOLD
) -> DQResult:
    """The account's checkpoint against the configured database, published as artifacts when in a run.

    Settings (database, home, Data Docs) are read here so no connection string becomes a task input.
    """
    settings = get_settings()
    result = run_checkpoint(
        database_url(settings),
        account,
        run_id=run_id,
        home=settings.home,
        reject_threshold=reject_threshold,
        docs_dir=settings.data_docs_dir,
        docs_url=settings.emag_sync_data_docs_url,
    )
    publish_dq_artifacts(result)
    return result


def publish_dq_artifacts(result: DQResult) -> None:
    """Inside a Prefect flow or task run: a markdown artifact per account and a link artifact to this
    checkpoint's page in Data Docs (under EMAG_SYNC_DATA_DOCS_URL, e.g. what ``emag-sync docs`` serves).

    Prefect stores a link artifact as the markdown ``[text](link)``: the text is escaped, the URL encoded.
    """
    from prefect.artifacts import create_link_artifact, create_markdown_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return  # a plain call (CLI, tests): nothing to attach the artifacts to
    account = result.account.name

    def publish() -> None:
        create_markdown_artifact(
            markdown=dq_markdown(result),
            key=artifact_key(account),
            description=f"Data-quality checkpoint of {account}: {result.status}",
        )
        if result.report_url:
            create_link_artifact(
                link=markdown_url(result.report_url),
                link_text=markdown_text(report_link_text(result)),
                key=f"{artifact_key(account)}-docs",
                description=f"This run's data-quality report of {account} in Great Expectations Data Docs",
            )

    record_in_prefect(f"the data-quality artifacts of {account}", publish)


@task(name="data-quality", task_run_name="data-quality-{account}", cache_policy=NO_CACHE)
def check_account_quality_task(
    account: Account, run_id: int | None = None, reject_threshold: float = DEFAULT_REJECT_THRESHOLD
) -> DQResult:
    """Prefect task: the account's checkpoint. A critical failure ends the task Failed with its one-line
    cause (logged at ERROR); warnings are logged at WARNING; the report's link at INFO."""
    from prefect import State
    from prefect.logging import get_run_logger
    from prefect.states import Failed

    result = run_step(check_account_quality, account, run_id, reject_threshold, account=account)
    if isinstance(result, State):
        return result  # the checkpoint could not run: already one line
    logger = get_run_logger()
    logger.info("%s: data-quality report: %s", account.title, result.report_url or result.data_docs_index)
    if result.critical_failures:
        logger.error(result.message)
        return cast(DQResult, Failed(message=result.message))
    for row in result.warnings:
        logger.warning("%s: data-quality warning: %s", account.title, row.details)
    return result
