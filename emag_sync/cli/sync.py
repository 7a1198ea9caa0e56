"""``emag-sync sync``: the sync flow run in this process, with a progress bar and the runs it made."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from emag_sync.accounts import Account
from emag_sync.api.credentials import resolve_account_config
from emag_sync.cli.console import console, dq_report_lines, err_console, sync_progress, sync_summary_table
from emag_sync.db import describe, engine_from_settings, first_line
from emag_sync.errors import ConfigError, MissingCredentialsError
from emag_sync.options import SyncOptions
from emag_sync.prefect_api import is_lost
from emag_sync.registry import resolve_accounts
from emag_sync.run_row import DqStatus, RunStatus
from emag_sync.runs import latest_run_id, recent_runs
from emag_sync.settings import Settings
from emag_sync.stopping import run_stoppable, stop_requested


@dataclass(frozen=True)
class SyncOutcome:
    """What the command line reports: success, and the one-line cause when not."""

    ok: bool
    error: str | None
    # The signal that stopped the runs (Ctrl-C: SIGINT, a worker stopped: SIGTERM); the command exits 128 + it.
    stopped_by: int | None = None


def check_configuration(
    settings: Settings, selection: str, seller: str | None = None
) -> tuple[Engine, list[Account]]:
    """Database, the accounts named and their credentials, checked before Prefect starts (its temporary
    server takes seconds): when no account named has credentials, the command stops here. The flow's
    preflight then checks each account's credentials, lock and eMAG, the same way for every deployment
    (an account that fails is left out, the others sync)."""
    from emag_sync.api.credentials import prefect_api_configured

    engine = engine_from_settings(settings)
    try:
        accounts = resolve_accounts(engine, selection, seller=seller, settings=settings)
        if not prefect_api_configured():  # with a Prefect server the flow's preflight reads the Secret blocks
            missing: list[MissingCredentialsError] = []
            for account in accounts:
                try:
                    resolve_account_config(settings, account)
                except MissingCredentialsError as exc:
                    missing.append(exc)
            if len(missing) == len(accounts) == 1:
                raise missing[0]
            if missing and len(missing) == len(accounts):
                raise ConfigError("; ".join(str(exc) for exc in missing))
    except BaseException:
        engine.dispose()
        raise
    return engine, accounts


def outcome_from_history(engine: Engine, accounts: Sequence[Account], since: int) -> str | None:
    """The sync's outcome from the run history, when Prefect could not record its flow run's end."""
    runs = {run.account: run for run in reversed(recent_runs(engine, limit=100)) if run.id > since}
    problems = []
    for account in accounts:
        run = runs.get(account.name)
        if run is None or run.status != RunStatus.SUCCEEDED:
            problems.append(
                f"{account.name}: {run.error if run and run.error else 'the sync did not finish'}"
            )
        elif run.dq_status == DqStatus.FAILED:
            problems.append(f"{account.name}: data quality failed (emag-sync check shows why)")
    note = "the Prefect API went away during the run, so Prefect does not know how it ended; the run history does"
    return f"{'; '.join(problems)} ({note})" if problems else None


def interrupted_line(engine: Engine, since: int, stopped: signal.Signals) -> str | None:
    """The one line saying which runs the stop ended (None when it came after they had finished)."""
    runs = [run for run in reversed(recent_runs(engine, limit=10)) if run.id > since]
    ended = [run for run in runs if run.status == RunStatus.INTERRUPTED]
    if not ended:
        return None
    which = ", ".join(
        f"{run.account} run {run.id} after "
        + (f"page {run.last_committed_page}" if run.last_committed_page else "no page")
        for run in ended
    )
    return (
        f"sync interrupted by {stopped.name}: {which} (committed batches kept, marked interrupted); "
        "`emag-sync sync --resume` continues it"
    )


def run_sync(
    settings: Settings, accounts: str, options: SyncOptions, seller: str | None = None
) -> SyncOutcome:
    """Run ``emag-product-sync`` in-process with a progress bar, then print the runs it made."""
    engine, targets = check_configuration(settings, accounts, seller)
    try:
        since = latest_run_id(engine)
        console.print(f"database: {describe(engine.url)}")
        from prefect.settings import temporary_settings

        from flows.sync import emag_product_sync

        # No heartbeats for a flow run in this process: they detect a crashed worker, and the run history
        # shows a crashed command (its lock dies with it); joining the heartbeat thread costs up to a second.
        with sync_progress(targets), temporary_settings(updates={"flows.heartbeat_frequency": None}):
            try:
                state = run_stoppable(
                    lambda: emag_product_sync(
                        accounts=",".join(a.name for a in targets), options=options, return_state=True
                    )
                )
                error = (
                    None if state.is_completed() else (state.message or f"the flow run ended {state.name}")
                )
            except Exception:
                if not is_lost():
                    raise  # not the Prefect API going away: a bug, with its traceback
                # The data went on; only Prefect could not record how the flow run ended: the run history can.
                error = outcome_from_history(engine, targets, since)
        try:
            console.print(sync_summary_table(engine, since_id=since))
            for line in dq_report_lines(engine, since_id=since):
                console.print(line, soft_wrap=True)
        except SQLAlchemyError as exc:  # the database went away: the run's own cause already says so
            error = error or f"the database at {describe(engine.url)} does not answer: {first_line(exc)}"
        if is_lost() and not error:
            err_console.print(
                "note: the Prefect API went away during the run; the sync went on without it, so this run's "
                "progress, artifacts and final state are not in Prefect (the run history above is complete)",
                soft_wrap=True,
            )
        stopped = stop_requested()
        interrupted = interrupted_line(engine, since, stopped) if stopped is not None else None
        if interrupted is not None:
            err_console.print(Text(interrupted, "yellow"), soft_wrap=True)
            return SyncOutcome(ok=False, error=interrupted, stopped_by=stopped)
        if error:
            err_console.print(Text.assemble(("sync failed:", "red"), " ", error), soft_wrap=True)
        return SyncOutcome(ok=error is None, error=error)
    finally:
        engine.dispose()
