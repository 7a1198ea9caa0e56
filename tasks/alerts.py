"""What a run tells the alerting automations: one Prefect event per account that synced, and one per run whose
data-quality checks warned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emag_sync.accounts import Account
    from expectations.results import DQResult

# The event an account's sync emits once its records are loaded and checked without a critical failure;
# the "accounts silent" automations (emag_sync/cli/alerts.py) expect it again within each account's window.
# Its resource is f"{ACCOUNT_RESOURCE}.{account name}", so an automation keeps one silence clock per account.
ACCOUNT_SYNCED_EVENT = "emag-sync.account.synced"
ACCOUNT_RESOURCE = "emag-sync.account"

# The event the "data-quality warnings" automation (emag_sync/cli/alerts.py) turns into a notification; its
# resource is f"{DQ_WARNING_RESOURCE}.{flow run id}", so the automation sees one resource per run.
DQ_WARNING_EVENT = "emag.data-quality.warning"
DQ_WARNING_RESOURCE = "emag.data-quality"
# One notification stays readable: the suites have 8 warning checks per account, each naming at most
# expectations.suites.MAX_LISTED_SKUS SKUs; these bounds only guard against a suite that grows.
MAX_WARNINGS = 20
MAX_WARNING_CHARS = 600


def dq_warning_lines(results: Sequence[DQResult]) -> list[str]:
    """One bounded line per failed non-critical expectation, ``account: details`` as in the run's report."""
    lines = [
        f"{result.account.name}: {row.details or row.name}" for result in results for row in result.warnings
    ]
    bounded = [
        line if len(line) <= MAX_WARNING_CHARS else line[: MAX_WARNING_CHARS - 3] + "..." for line in lines
    ]
    if len(bounded) > MAX_WARNINGS:
        bounded = [*bounded[: MAX_WARNINGS - 1], f"(+{len(bounded) - MAX_WARNINGS + 1} more warnings)"]
    return bounded


def report_dq_warnings(results: Sequence[DQResult]) -> None:
    """Inside a flow run whose checks warned: emit the run's one data-quality warning event.

    Prefect relates the event to the run, its flow, deployment and tags, which the automation matches and
    its notification names. Outside a flow run (the CLI's ``check``) there is nothing to alert about.
    """
    from prefect.context import FlowRunContext
    from prefect.events import emit_event

    context = FlowRunContext.get()
    lines = dq_warning_lines(results)
    if context is None or context.flow_run is None or not lines:
        return
    emit_event(
        event=DQ_WARNING_EVENT,
        resource={
            "prefect.resource.id": f"{DQ_WARNING_RESOURCE}.{context.flow_run.id}",
            "prefect.resource.name": f"data-quality warnings of {context.flow_run.name}",
        },
        payload={
            "accounts": sorted({result.account.name for result in results if result.warnings}),
            "warnings": lines,
        },
    )


def account_resource_id(name: str) -> str:
    """``emag-sync.account.fbe``: the account's resource in Prefect events."""
    return f"{ACCOUNT_RESOURCE}.{name}"


def report_account_synced(account: Account, sync_run_id: int) -> None:
    """Inside a flow run: emit the account's synced event (its sync succeeded and its data-quality check
    found no critical failure), which restarts the account's silence window.

    Prefect relates the event to the flow run, its deployment and tags; the notification names the account
    and links the run. Outside a flow run there is no server to tell.
    """
    from prefect.context import FlowRunContext
    from prefect.events import emit_event

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    emit_event(
        event=ACCOUNT_SYNCED_EVENT,
        resource={
            "prefect.resource.id": account_resource_id(account.name),
            "prefect.resource.name": account.name,
            "emag-sync.seller": account.seller or "",
            "emag-sync.platform": account.platform.code,
        },
        payload={"sync_run_id": sync_run_id},
    )
