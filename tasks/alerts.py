"""What a run tells the alerting automations: one Prefect event per run whose data-quality checks warned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from expectations.results import DQResult

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
