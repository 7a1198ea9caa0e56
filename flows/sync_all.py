"""The ``emag-sync-all`` flow: every enabled account, synced in groups by child flow runs on the work pool."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import State, flow, get_run_logger, runtime
from prefect.states import Failed
from pydantic import Field

from emag_sync.options import DEFAULT_ACCOUNTS_PER_RUN, MAX_ACCOUNTS_PER_RUN, Accounts, SyncOptions
from tasks.artifacts import publish_summary_task, sync_all_markdown
from tasks.fan_out import (
    SYNC_ACCOUNTS_DEPLOYMENT,
    AccountOutcome,
    account_outcomes_task,
    plan_groups_task,
    start_children_task,
    wait_for_children_task,
)

AccountsPerRun = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_ACCOUNTS_PER_RUN,
        description="accounts one child flow run syncs at once, in one process (a flow run costs a process "
        "start: seconds); more accounts than this make more child runs, which the pool's workers share",
    ),
]
MaxWaitMinutes = Annotated[
    int, Field(ge=1, le=7 * 24 * 60, description="how long to wait for the child runs before failing them")
]


@flow(name="emag-sync-all", log_prints=False)
def emag_sync_all(
    accounts: Accounts = "all",
    seller: str | None = None,
    accounts_per_run: AccountsPerRun = DEFAULT_ACCOUNTS_PER_RUN,
    options: SyncOptions = SyncOptions(),
    deployment: str = SYNC_ACCOUNTS_DEPLOYMENT,
    max_wait_minutes: MaxWaitMinutes = 12 * 60,
) -> list[AccountOutcome] | State[Any]:
    """Sync the named accounts (``all``: every enabled one; ``seller`` keeps that seller's) as flow runs of
    ``deployment``, ``accounts_per_run`` accounts each, on whatever workers poll its work pool; then one
    summary of every account, and Failed naming each account that failed.

    Retry reruns only what failed: the children that completed are kept, the others run again and resume.
    """
    logger = get_run_logger()
    planned = plan_groups_task(accounts, seller, accounts_per_run, return_state=True)
    if planned.is_failed():
        return Failed(message=planned.message)
    groups = planned.result()
    logger.info("%s accounts in %s flow runs of %s", sum(map(len, groups)), len(groups), deployment)

    children = start_children_task(groups, options, str(runtime.flow_run.id), deployment)
    finished = wait_for_children_task(children, max_wait_minutes * 60.0)
    outcomes = account_outcomes_task(children, finished)

    publish_summary_task(sync_all_markdown(outcomes))
    failed = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failed:
        logger.error("%s (flow run %s)", outcome.cause, outcome.child.name)
    if failed:
        causes = "; ".join(outcome.cause or outcome.account for outcome in failed)
        return Failed(message=f"{len(failed)} of {len(outcomes)} accounts failed: {causes}")
    return outcomes
