"""The data-quality step: the checkpoint of a run's accounts against the database (one Great Expectations run
for all of them), each account's verdict and artifacts in the Prefect UI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.accounts import Account
from emag_sync.db import database_url
from emag_sync.escaping import markdown_text, markdown_url
from emag_sync.run_row import DqStatus
from emag_sync.settings import get_settings
from expectations.checkpoint import run_checkpoints
from expectations.report import artifact_key, dq_markdown, report_link_text
from expectations.results import DQResult
from expectations.suites import DEFAULT_REJECT_THRESHOLD
from tasks.artifacts import drop_earlier_attempts, record_in_prefect
from tasks.outcomes import run_step

if TYPE_CHECKING:
    from prefect import State


def check_accounts_quality(
    targets: Sequence[tuple[Account, int | None]], reject_threshold: float = DEFAULT_REJECT_THRESHOLD
) -> dict[str, DQResult]:
    """The checkpoint of every (account, sync run id) in one run against the configured database, each
    account's result published as artifacts when in a run; results by account name (None: the account's
    latest succeeded run, nothing recorded on it).

    Settings (database, home, Data Docs) are read here so no connection string becomes a task input.
    """
    settings = get_settings()
    results = run_checkpoints(
        database_url(settings),
        targets,
        home=settings.home,
        reject_threshold=reject_threshold,
        docs_dir=settings.data_docs_dir,
        docs_url=settings.emag_sync_data_docs_url,
    )
    for result in results.values():
        publish_dq_artifacts(result)
    return results


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
        for key in (artifact_key(account), f"{artifact_key(account)}-docs"):  # a Retry shows its own only
            drop_earlier_attempts(key)
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


def _task_run_name() -> str:
    """``data-quality-fbe`` for one account, ``data-quality-12-accounts`` for more."""
    from prefect.runtime import task_run

    names = [account.name for account, _ in task_run.parameters.get("targets") or []]
    return f"data-quality-{names[0]}" if len(names) == 1 else f"data-quality-{len(names)}-accounts"


@task(name="data-quality", task_run_name=_task_run_name, cache_policy=NO_CACHE)
def check_accounts_quality_task(
    targets: Sequence[tuple[Account, int | None]], reject_threshold: float = DEFAULT_REJECT_THRESHOLD
) -> dict[str, DQResult]:
    """Prefect task: the checkpoint of every account in one run, results by account name.

    It ends Completed whatever the verdicts: a critical failure is its account's alone (logged at ERROR as
    its one-line cause; see ``DQVerdicts``), warnings are logged at WARNING, each report's link at INFO.
    Failed (one line) only when the checkpoint could not run at all (the database unreachable).
    """
    from prefect import State
    from prefect.logging import get_run_logger

    results = run_step(check_accounts_quality, targets, reject_threshold)
    if isinstance(results, State):
        return results  # the checkpoint could not run: already one line
    logger = get_run_logger()
    for result in results.values():
        logger.info(
            "%s: data-quality report: %s", result.account.title, result.report_url or result.data_docs_index
        )
        if result.critical_failures:
            logger.error(result.message)
        for row in result.warnings:
            logger.warning("%s: data-quality warning: %s", result.account.title, row.details)
    return results


@dataclass
class DQVerdicts:
    """What a flow makes of the data-quality step: each account's status, and the accounts that failed
    (by name, their one-line cause); ``results`` holds the verdicts of the accounts it could check."""

    results: dict[str, DQResult] = field(default_factory=dict)
    status: dict[str, DqStatus] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, accounts: Sequence[Account], state: State[dict[str, DQResult]]) -> DQVerdicts:
        """The verdicts of ``accounts`` from the final state of ``check_accounts_quality_task``."""
        verdicts = cls()
        if state.is_failed():  # nothing was checked: every account fails with the step's cause
            for account in accounts:
                verdicts.status[account.name] = DqStatus.FAILED
                verdicts.failures[account.name] = f"{account.name}: data quality not checked: {state.message}"
            return verdicts
        results: dict[str, DQResult] = state.result()
        for account in accounts:
            result = results[account.name]
            verdicts.status[account.name] = result.status
            if result.critical_failures:
                verdicts.failures[account.name] = result.message
            else:
                verdicts.results[account.name] = result
        return verdicts
