"""``emag-sync sync``: the sync flow run in this process, with a progress bar and the runs it made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from emag_sync.accounts import AccountType, parse_accounts
from emag_sync.api.credentials import resolve_account_config
from emag_sync.cli.console import console, dq_report_lines, err_console, sync_progress, sync_summary_table
from emag_sync.db import describe, engine_from_settings, first_line
from emag_sync.options import Accounts, SyncOptions
from emag_sync.runs import latest_run_id
from emag_sync.settings import Settings


@dataclass(frozen=True)
class SyncOutcome:
    """What the command line reports: success, and the one-line cause when not."""

    ok: bool
    error: str | None


def check_configuration(settings: Settings, accounts: Sequence[AccountType]) -> Engine:
    """Credentials and database, checked before Prefect starts (its temporary server takes seconds).

    The flow's preflight then checks the accounts' locks and eMAG, the same way for every deployment.
    """
    for account in accounts:
        resolve_account_config(settings, account)
    return engine_from_settings(settings)


def flow_accounts(accounts: Sequence[AccountType]) -> Accounts:
    """The flow's ``accounts`` parameter for these accounts."""
    if set(accounts) == set(AccountType):
        return "both"
    return "main" if accounts[0] is AccountType.MAIN else "fbe"


def run_sync(settings: Settings, accounts: str, options: SyncOptions) -> SyncOutcome:
    """Run ``emag-product-sync`` in-process with a progress bar, then print the runs it made."""
    targets = parse_accounts(accounts)
    engine = check_configuration(settings, targets)
    try:
        since = latest_run_id(engine)
        console.print(f"database: {describe(engine.url)}")
        from flows.sync import emag_product_sync

        with sync_progress(targets):
            state = emag_product_sync(accounts=flow_accounts(targets), options=options, return_state=True)
        error = None if state.is_completed() else (state.message or f"the flow run ended {state.name}")
        try:
            console.print(sync_summary_table(engine, since_id=since))
            for line in dq_report_lines(engine, since_id=since):
                console.print(line, soft_wrap=True)
        except SQLAlchemyError as exc:  # the database went away: the run's own cause already says so
            error = error or f"the database at {describe(engine.url)} does not answer: {first_line(exc)}"
        if error:
            err_console.print(Text.assemble(("sync failed:", "red"), " ", error), soft_wrap=True)
        return SyncOutcome(ok=error is None, error=error)
    finally:
        engine.dispose()
