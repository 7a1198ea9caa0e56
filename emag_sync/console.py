"""What the command line shows: progress bars, run-history tables, and the incident's two queries."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, text

from emag_sync.settings import AccountType

if TYPE_CHECKING:
    from tasks.runs import RunRow

# Piped output (logs, CI) has no terminal width; rich would assume 80 columns and squash the tables.
PIPED_WIDTH = 140
console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)

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
    """The run history (app.emag_sync_runs), newest first, narrow enough for an 80-column terminal."""
    from tasks.runs import recent_runs

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    columns = ("run", "account", "status", "started UTC", "s", "eMAG", "new", "changed", "same", "rejected",
               "gone", "pages", "req", "429", "DQ")  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=column in ("started UTC", "status"))
    errors: list[str] = []
    for run in recent_runs(engine, limit=limit):
        if run.id <= since_id:
            continue
        table.add_row(
            str(run.id), run.account_type, run.status + (" (resumed)" if run.resumed_count else ""),
            f"{run.started_at:%m-%d %H:%M}", f"{run.duration_seconds or 0:.0f}", str(run.expected_items or 0),
            str(run.rows_inserted), str(run.rows_updated), str(run.rows_unchanged), str(run.rows_rejected),
            str(run.rows_deactivated), f"{run.last_committed_page}/{run.expected_pages or 0}",
            str(run.api_requests), str(run.rate_limited), run.dq_status or "-",
        )  # fmt: skip
        if run.error:
            errors.append(f"run {run.id} ({run.account_type}): {run.error}")
    if errors:
        table.caption = "\n".join(errors)
        table.caption_justify = "left"
    return table


def sync_summary_table(engine: Engine, *, since_id: int) -> Table:
    """The runs a sync just made, one column per account (fits any terminal)."""
    from tasks.runs import recent_runs

    runs = sorted(
        (r for r in recent_runs(engine, limit=10) if r.id > since_id), key=lambda r: r.account_type != "main"
    )
    table = Table(title="This sync")
    table.add_column("")
    for run in runs:
        table.add_column(f"{run.account_type.upper()} (run {run.id})", justify="right")
    metrics: dict[str, Callable[[RunRow], object]] = {
        "status": lambda r: r.status + (" (resumed)" if r.resumed_count else ""),
        "eMAG count": lambda r: r.expected_items or 0,
        "pages": lambda r: f"{r.last_committed_page}/{r.expected_pages or 0}",
        "inserted": lambda r: r.rows_inserted,
        "updated": lambda r: r.rows_updated,
        "unchanged": lambda r: r.rows_unchanged,
        "rejected": lambda r: r.rows_rejected,
        "deactivated": lambda r: r.rows_deactivated,
        "API requests": lambda r: r.api_requests,
        "429 answers": lambda r: r.rate_limited,
        "retries": lambda r: r.retries,
        "seconds": lambda r: f"{r.duration_seconds or 0:.1f}",
        "data quality": lambda r: r.dq_status or "-",
    }
    for name, value in metrics.items():
        table.add_row(name, *(str(value(run)) for run in runs))
    errors = [f"{run.account_type}: {run.error}" for run in runs if run.error]
    if errors:
        table.caption = "\n".join(errors)
        table.caption_justify = "left"
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
