"""What the command line shows: progress bars, run-history tables, and the incident's two queries."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, text

from emag_sync.settings import AccountType

console = Console()
err_console = Console(stderr=True)

# The incident's verification SQL, run unchanged.
INCIDENT_QUERIES = (
    "SELECT COUNT(*) FROM app.emag_product_offers_v2 WHERE account_type = 'fbe';",
    "SELECT sku, emag_offer_id, price, min_sale_price, max_sale_price, stock, reserved_stock, "
    "available_stock, visibility, sync_attempts FROM app.emag_product_offers_v2 "
    "WHERE sku = 'EMG469' AND account_type = 'fbe';",
)


def offline_prefect_defaults() -> None:
    """Quiet, offline-friendly Prefect defaults; must run before Prefect is imported. User values win."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # The temporary server Prefect starts without PREFECT_API_URL needs more than 20 s on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@contextmanager
def sync_progress(accounts: Sequence[AccountType]) -> Iterator[None]:
    """A rich progress bar per account, fed by the sync's progress events."""
    from tasks.progress import ProgressEvent, add_listener

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pages"),
        TextColumn("{task.fields[records]} records"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        ids = {a: bar.add_task(a.label, total=None, records=0) for a in accounts}

        def on_event(event: ProgressEvent) -> None:
            if event.account in ids:
                bar.update(
                    ids[event.account],
                    completed=event.pages_done,
                    total=event.pages_total,
                    records=event.records_done,
                )

        remove = add_listener(on_event)
        try:
            yield
        finally:
            remove()


def runs_table(engine: Engine, *, limit: int = 20, since_id: int = 0, title: str = "Recent syncs") -> Table:
    """The run history (app.emag_sync_runs), newest first."""
    from tasks.runs import recent_runs

    table = Table(title=title)
    for column in ("run", "account", "status", "started (UTC)", "seconds", "eMAG count", "inserted",
                   "updated", "unchanged", "rejected", "deactivated", "pages", "requests", "429s",
                   "data quality", "error"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for run in recent_runs(engine, limit=limit):
        if run.id <= since_id:
            continue
        table.add_row(
            str(run.id), run.account_type, run.status + (" (resumed)" if run.resumed_count else ""),
            f"{run.started_at:%Y-%m-%d %H:%M:%S}", f"{run.duration_seconds or 0:.1f}",
            str(run.expected_items or 0), str(run.rows_inserted), str(run.rows_updated),
            str(run.rows_unchanged), str(run.rows_rejected), str(run.rows_deactivated),
            f"{run.last_committed_page}/{run.expected_pages or 0}", str(run.api_requests),
            str(run.rate_limited), run.dq_status or "-", (run.error or "")[:200],
        )  # fmt: skip
    return table


def incident_queries_table(engine: Engine) -> Table:
    """The incident's two verification queries with their answers."""
    table = Table(title="The incident's verification queries", show_lines=True)
    table.add_column("query", overflow="fold")
    table.add_column("answer", overflow="fold")
    with engine.connect() as conn:
        for sql in INCIDENT_QUERIES:
            result = conn.execute(text(sql))
            rows = [dict(row._mapping) for row in result]
            answer = "\n".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in rows) or "(no rows)"
            table.add_row(sql, answer)
    return table
