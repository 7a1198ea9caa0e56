"""What a sync shows in the Prefect UI: a progress artifact per account (and local listeners, the CLI's
progress bar), and the run summary artifact."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.accounts import Account
from emag_sync.escaping import markdown_text
from emag_sync.prefect_api import (
    describe,
    is_busy,
    is_lost,
    is_unreachable,
    mark_lost,
    record_failed,
    record_made,
)
from emag_sync.run_row import COST_FIGURES, COUNTER_LABELS, FOUND_FIGURES, RunRow

if TYPE_CHECKING:
    from tasks.fan_out import AccountOutcome

log = logging.getLogger(__name__)
T = TypeVar("T")

# Each artifact update is a Prefect API call. Against eMAG (3 requests/s) a batch of 5 pages takes at least
# 1.7 s, so every batch is shown; without a rate limit (the sandbox at 200,000 records) batches commit every
# few hundred milliseconds, and one call per batch cost the flow several percent of its wall time.
ARTIFACT_UPDATE_SECONDS = 1.0


@dataclass(frozen=True)
class ProgressEvent:
    """Pages committed so far out of the total that ``product_offer/count`` announced."""

    account: Account
    pages_done: int
    pages_total: int
    records_done: int


# A record the server could not take is asked again this many times (Prefect's client waits about 2 s
# before it gives a busy answer back); this many records in a row that could not be made mean the API is
# of no use to this run, which then stops asking.
RECORD_ATTEMPTS = 3
FAILED_RECORDS_BEFORE_LOST = 3


def record_in_prefect(what: str, call: Callable[[], T], *, replaced_soon: bool = False) -> T | None:
    """Record ``what`` in Prefect (an artifact); its result, or None when it could not be recorded. Never
    fails the run and never stalls it for long.

    Prefect's client is asked without its own retry loop (its back-off sleeps up to a minute). A server that
    is not there marks the API lost for the rest of the process at once (said once): later records are
    skipped and the run's log lines carry them. A busy one (503 while its database is locked, a timeout) is
    asked again (RECORD_ATTEMPTS in all); a record that still fails is skipped with one warning line, and
    only several records failing in a row mark the API lost. A record ``replaced_soon`` (a progress bar,
    updated again a second later) is tried once and a busy server skips it without a word.
    """
    from prefect.settings import temporary_settings

    attempts = 1 if replaced_soon else RECORD_ATTEMPTS
    for attempt in range(1, attempts + 1):
        if is_lost():
            return None
        try:
            with temporary_settings(updates={"client.max_retries": 0}):
                result = call()
        except Exception as exc:  # an artifact is a view; the data and the run's outcome do not depend on it
            if is_unreachable(exc):
                mark_lost(f"recording {what}: {describe(exc)}")
                return None
            if is_busy(exc) and attempt < attempts:
                continue
            if is_busy(exc) and replaced_soon:
                log.debug("the Prefect API did not record %s: %s", what, describe(exc))
                return None
            failed = record_failed()
            tries = f" ({attempt} attempts)" if attempt > 1 else ""
            log.warning(
                "the Prefect API did not record %s: %s%s; the run goes on", what, describe(exc), tries
            )
            if failed >= FAILED_RECORDS_BEFORE_LOST:
                mark_lost(f"{failed} records in a row failed, the last {what}: {describe(exc)}")
            return None
        record_made()
        return result
    return None


Listener = Callable[[ProgressEvent], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def add_listener(listener: Listener) -> Callable[[], None]:
    """Register a local listener (e.g. a rich progress bar); returns the function that removes it."""
    with _lock:
        _listeners.append(listener)

    def remove() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return remove


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class ProgressReporter:
    """Reports one account's progress per committed batch, to Prefect (when in a run) and to listeners."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self._artifact_id: UUID | None = None
        self._prefect = _in_prefect_run()
        self._published_at = -ARTIFACT_UPDATE_SECONDS

    def report(self, pages_done: int, pages_total: int, records_done: int) -> None:
        event = ProgressEvent(self.account, pages_done, max(pages_total, pages_done), records_done)
        with _lock:
            listeners = list(_listeners)
        for listener in listeners:
            listener(event)
        now = time.monotonic()
        finished = event.pages_done >= event.pages_total
        if self._prefect and (finished or now - self._published_at >= ARTIFACT_UPDATE_SECONDS):
            self._published_at = now
            self._publish(event)

    def _publish(self, event: ProgressEvent) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = 100.0 if event.pages_total == 0 else 100.0 * event.pages_done / event.pages_total
        description = (
            f"{self.account.label}: {event.pages_done} of {event.pages_total} pages committed "
            f"({event.records_done} records)"
        )
        key = f"emag-sync-progress-{self.account.name}"

        def publish() -> None:
            if self._artifact_id is None:
                drop_earlier_attempts(key)
                created = create_progress_artifact(progress=percent, key=key, description=description)
                self._artifact_id = created if isinstance(created, UUID) else None
            else:
                update_progress_artifact(self._artifact_id, progress=percent, description=description)

        # Until the last page, a later update replaces this one: a busy server skips it, no retry.
        last = event.pages_done >= event.pages_total
        record_in_prefect(f"the progress of {self.account.name}", publish, replaced_soon=not last)
        self._prefect = not is_lost()


# --- the run summary -------------------------------------------------------------------------------

SUMMARY_ARTIFACT_KEY = "emag-sync-summary"
# The table artifact each sync flow run leaves: one row per account it was asked for, with how it ended.
# ``sync-all`` reads its children's to name each failed account with its own cause.
ACCOUNT_OUTCOMES_KEY = "emag-sync-accounts"


def _table(titles: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table whose cells are text (escaped), never markup."""
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    return lines + ["| " + " | ".join(markdown_text(cell) for cell in row) + " |" for row in rows]


def summary_markdown(
    runs: Sequence[RunRow],
    dq_status: Mapping[str, str],
    failures: Mapping[str, str],
    title: str = "eMAG product sync",
) -> str:
    """Two tables, one row per account (what the read found; what it cost), then the failures with their
    causes (eMAG's and the database's text, literal). Every figure is visible at 1400 px."""
    table = _table
    found = [
        [run.account, run.status_text, dq_status.get(run.account, "not run")]
        + [run.figure(column) for column in FOUND_FIGURES]
        for run in runs
    ]
    cost = [[run.account, *(run.figure(column) for column in COST_FIGURES)] for run in runs]
    lines = [f"# {title}", ""]
    lines += table(["account", "status", "data quality", *(COUNTER_LABELS[c] for c in FOUND_FIGURES)], found)
    lines += ["", *table(["account", *(COUNTER_LABELS[c] for c in COST_FIGURES)], cost)]
    for account, error in failures.items():
        lines += ["", f"**{markdown_text(account)}: failed** — {markdown_text(error)}"]
    return "\n".join(lines) + "\n"


def sync_all_markdown(outcomes: Sequence[AccountOutcome], ui_url: str | None = None) -> str:
    """``sync-all``'s summary: the accounts' tables as a single sync shows them (their rows from the run
    history), each failed account with its one-line cause, then the child flow runs, linked to the UI."""
    from prefect.settings import get_current_settings

    ui_url = ui_url or get_current_settings().ui_url
    runs = [outcome.run for outcome in outcomes if outcome.run is not None]
    dq_status = {outcome.account: outcome.dq_status for outcome in outcomes}
    failures = {
        outcome.account: f"{outcome.cause} (flow run {outcome.child.name})"
        for outcome in outcomes
        if not outcome.ok
    }
    lines = [
        summary_markdown(runs, dq_status, failures, title="eMAG sync of all accounts"),
        "## Flow runs",
        "",
    ]
    children = list({outcome.child.flow_run_id: outcome for outcome in outcomes}.values())
    lines += ["| flow run | accounts | state |", "|---|---|---|"]
    for outcome in children:
        child = outcome.child
        name = markdown_text(child.name)
        link = f"[{name}]({ui_url.rstrip('/')}/runs/flow-run/{child.flow_run_id})" if ui_url else name
        accounts = markdown_text(", ".join(child.accounts))
        lines.append(f"| {link} | {accounts} | {markdown_text(outcome.child_state)} |")
    return "\n".join(lines) + "\n"


def failed_runs(accounts: Sequence[Account], flow_run_id: str) -> list[RunRow]:
    """The run rows this flow run left for accounts whose sync failed, for the summary's tables (what the
    run got through before it failed: pages, requests, 429s). None when the database cannot say (the
    failure may be the database itself): the summary then gives the causes alone."""
    from sqlalchemy.exc import SQLAlchemyError

    from emag_sync.db import engine_from_settings
    from emag_sync.errors import EmagSyncError
    from emag_sync.runs import latest_in_flow_run
    from emag_sync.settings import get_settings

    if not accounts:
        return []
    try:
        engine = engine_from_settings(get_settings())
    except EmagSyncError:
        return []
    try:
        found = [latest_in_flow_run(engine, account, flow_run_id) for account in accounts]
    except SQLAlchemyError as exc:
        log.debug("the failed runs' rows could not be read for the summary: %s", exc)
        return []
    finally:
        engine.dispose()
    return [run for run in found if run is not None]


def drop_earlier_attempts(key: str) -> None:
    """Delete this flow run's artifacts with ``key`` made by an earlier attempt (a Retry re-runs the flow):
    the run shows one summary and one progress bar per account, not one per attempt."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.context import FlowRunContext, TaskRunContext

    flow_context, task_context = FlowRunContext.get(), TaskRunContext.get()
    flow_run_id = (
        flow_context.flow_run.id
        if flow_context and flow_context.flow_run
        else task_context.task_run.flow_run_id
        if task_context
        else None
    )
    if flow_run_id is None:
        return
    with get_client(sync_client=True) as client:
        earlier = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[key])
            )
        )
        for artifact in earlier:
            client.delete_artifact(artifact.id)


@task(name="publish-summary", task_run_name="publish-summary", cache_policy=NO_CACHE)
def publish_summary_task(markdown: str) -> None:
    """Attach the run summary to the current flow run (its Artifacts tab), replacing an earlier attempt's."""
    from prefect.artifacts import create_markdown_artifact

    def publish() -> bool:
        drop_earlier_attempts(SUMMARY_ARTIFACT_KEY)
        create_markdown_artifact(markdown=markdown, key=SUMMARY_ARTIFACT_KEY, description="eMAG sync summary")
        return True

    if record_in_prefect("the run summary", publish) is None:
        log.info("the run summary (not recorded in Prefect):\n%s", markdown)


def account_rows(
    names: Sequence[str], failures: Mapping[str, str], runs: Sequence[RunRow], dq_status: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The rows of a sync flow run's account table (ACCOUNT_OUTCOMES_KEY): every account it was asked for,
    with its data-quality verdict as this flow run's check gave it."""
    by_name = {run.account: run for run in runs}
    rows = []
    for name in names:
        run = by_name.get(name)
        rows.append(
            {
                "account": name,
                "outcome": "failed" if name in failures else "succeeded",
                "cause": failures.get(name, ""),
                "run_id": run.id if run is not None else None,
                "data_quality": dq_status.get(name) or (run.dq_status if run is not None else None) or "",
            }
        )
    return rows


def literal_cells(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` for a table artifact: the UI renders its text cells as markdown, so account names and eMAG's
    words are made literal there (a sync-all parent reads them back with markdown_plain)."""
    return [{k: markdown_text(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]


@task(name="publish-account-outcomes", task_run_name="publish-account-outcomes", cache_policy=NO_CACHE)
def publish_account_outcomes_task(rows: list[dict[str, Any]]) -> None:
    """Attach the account table (ACCOUNT_OUTCOMES_KEY) to the current flow run, replacing an earlier
    attempt's: the Prefect UI shows it as a table, and a ``sync-all`` parent reads it."""
    from prefect.artifacts import create_table_artifact

    table = literal_cells(rows)

    def publish() -> None:
        drop_earlier_attempts(ACCOUNT_OUTCOMES_KEY)
        create_table_artifact(
            table=table, key=ACCOUNT_OUTCOMES_KEY, description="how each account's sync ended"
        )

    record_in_prefect("the account table", publish)
