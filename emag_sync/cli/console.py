"""What the terminal shows: progress bars, run-history tables, price and data-quality tables, the incident's queries."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, text

from emag_sync.accounts import Account
from emag_sync.cli.output import Listing
from emag_sync.locks import account_key, price_senders
from emag_sync.prices.audit import AuditRow, Kind, price_history
from emag_sync.prices.results import RESULT_COLUMNS
from emag_sync.prices.rules import PlannedUpdate, change_rows, money_text
from emag_sync.run_row import COUNTER_LABELS, RunRow
from emag_sync.runs import recent_runs

if TYPE_CHECKING:
    from expectations.results import DQResult

# Piped output (logs, cron, CI, scripts) has no terminal width: rich would assume 80 columns and cut
# headers and values with "…" to fit. Off a terminal the width is unbounded, so every line is complete
# (a table is as wide as its widest values); nothing printed pads itself to the console's width.
PIPED_WIDTH = 1_000_000
# What is printed quotes eMAG, the database and operators, so it is data, never markup: these consoles read
# no markup and no :emoji: codes in a string (rich would raise on an eMAG message holding "[/data]" and
# drop "[sale_price]" from it), and the tables below hold Text cells, which no console parses. Styles are
# given as styles (Text, style=...).
console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH, markup=False, emoji=False)
err_console = Console(
    stderr=True, width=None if sys.stderr.isatty() else PIPED_WIDTH, markup=False, emoji=False
)

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


# What changes the database's schema says so on the terminal, however the command reached it.
SCHEMA_LOGGERS = ("emag_sync.schema_version", "emag_sync.migrations")


def say_schema_changes() -> None:
    """A schema upgrade (or adoption) done on the way is one line on stderr: ``emag-sync: database: ...``."""
    import logging

    class CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
        """Writes to sys.stderr as it is when a line is logged, not as it was when the handler was made
        (a test's captured stream is closed by then)."""

        @property
        def stream(self) -> TextIO:
            return sys.stderr

        @stream.setter
        def stream(self, value: object) -> None:
            pass

    handler = CurrentStderr()
    handler.setFormatter(logging.Formatter("emag-sync: %(message)s"))
    for name in SCHEMA_LOGGERS:
        logger = logging.getLogger(name)
        if not any(getattr(h, "_emag_schema", False) for h in logger.handlers):
            handler._emag_schema = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


def terminal_owns_console() -> None:
    """Prefect's console lines off for a flow run in this process (before Prefect is imported).

    The command shows its own progress, summary and one-line cause; Prefect's lines (its state changes
    repeat that cause) still reach the Prefect UI. PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL=INFO brings
    them back to the terminal. Prefect's client retries a failed API call twice, not five times: a run whose
    Prefect API went away ends in seconds, not minutes.
    """
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_INTERNAL_LEVEL", "CRITICAL")
    # A dead Prefect API would otherwise hold the flow run's last state change for a minute of retries.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")


@contextmanager
def sync_progress(accounts: Sequence[Account]) -> Iterator[None]:
    """A rich progress bar per account on a terminal, fed by the sync's progress events.

    Piped output (logs, CI) gets none: a bar drawn once at the end says nothing the summary does not.
    """
    if not err_console.is_terminal:
        yield
        return
    from tasks.artifacts import ProgressEvent, add_listener

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


def cells(values: Iterable[object]) -> list[Text]:
    """Table cells that show ``values`` as they are."""
    return [Text(str(value)) for value in values]


def caption(lines: Sequence[str]) -> Text | None:
    """A table caption of literal lines (run errors), or None without any; off a terminal each line is
    printed whole, not wrapped to the table's width."""
    if not lines:
        return None
    if console.is_terminal:
        return Text("\n".join(lines))
    return Text("\n".join(lines), no_wrap=True, overflow="ignore")


# The run history's columns as scripts read them (--format tsv|json): the table's, raw and by column name.
RUN_FIELDS = (
    "id", "account", "account_type", "status", "resumed_count", "started_at", "finished_at", *COUNTER_LABELS,
    "expected_pages", "dq_status", "error",
)  # fmt: skip


def runs_listing(engine: Engine, *, limit: int = 20, account: str | None = None) -> Listing:
    """The run history (app.emag_sync_runs), newest first; ``account``: that account's only."""
    runs = recent_runs(engine, limit=limit, account=account)
    table = Table(title="Recent syncs", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for column in ("run", "account", "status", "started UTC", *COUNTER_LABELS.values(), "DQ"):
        table.add_column(column, no_wrap=column in ("started UTC", "status"))
    for run in runs:
        table.add_row(*cells([
            run.id, run.account, run.status_text, f"{run.started_at:%m-%d %H:%M}",
            *(run.figure(c) for c in COUNTER_LABELS), run.dq_status or "-",
        ]))  # fmt: skip
    table.caption = caption([f"run {run.id} ({run.account}): {run.error}" for run in runs if run.error])
    table.caption_justify = "left"
    records = [{name: getattr(run, name) for name in RUN_FIELDS} for run in runs]
    return Listing(RUN_FIELDS, records, table)


def _runs_since(engine: Engine, since_id: int) -> list[RunRow]:
    """The runs a sync just made, in the order they started (MAIN before FBE, as the accounts were named)."""
    runs = (r for r in recent_runs(engine, limit=1000) if r.id > since_id)
    return sorted(runs, key=lambda r: r.id)


def _run_label(run: RunRow) -> str:
    """``MAIN`` / ``FBE`` for the accounts of earlier versions, else the account's name."""
    return run.kind.label if run.account == run.account_type else run.account


def sync_summary_table(engine: Engine, *, since_id: int) -> Table:
    """The runs a sync just made, one column per account (fits any terminal)."""
    runs = _runs_since(engine, since_id)
    table = Table(title="This sync")
    table.add_column("")
    for run in runs:
        table.add_column(Text(f"{_run_label(run)} (run {run.id})"), justify="right")
    table.add_row("status", *cells(run.status_text for run in runs))
    for column, label in COUNTER_LABELS.items():
        table.add_row(label, *cells(run.figure(column) for run in runs))
    table.add_row("data quality", *cells(run.dq_status or "-" for run in runs))
    table.caption = caption([f"{run.account}: {run.error}" for run in runs if run.error])
    table.caption_justify = "left"
    return table


def dq_report_lines(engine: Engine, *, since_id: int) -> list[str]:
    """Where the data-quality report of each run since ``since_id`` is read (EMAG_SYNC_DATA_DOCS_URL)."""
    runs = _runs_since(engine, since_id)
    return [
        f"data-quality report {run.account}: {run.dq_results['report_url']}"
        for run in runs
        if run.dq_results and run.dq_results.get("report_url")
    ]


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
            table.add_row(*cells([sql, answer]))
    return table


# --- price updates and data quality -------------------------------------------------------------------


def changes_table(plan: PlannedUpdate) -> Table:
    """What a single update changes."""
    offer = plan.offer
    table = Table(title=Text(f"{offer.sku} on eMAG {offer.account.label} (offer id {offer.emag_offer_id})"))
    table.add_column("")
    table.add_column("now", justify="right")
    table.add_column("new", justify="right")
    for name, now, new in change_rows(plan):
        table.add_row(*cells([name, now, new]), style="bold" if now != new else None)
    return table


_STATUS_COLOURS = {
    "applied": "green",
    "invalid": "red",
    "refused": "red",
    "not-applied": "red",
    "uncertain": "yellow",
    "interrupted": "yellow",
    "sending": "cyan",
}


def results_table(
    rows: Sequence[Mapping[str, str]], columns: Sequence[str] = RESULT_COLUMNS, title: str = "Price updates"
) -> Table:
    """Per-line verdicts of a price or stock update (every cell is text, never markup)."""
    table = Table(title=title)
    numeric = ("line", "warehouse", "old stock", "new stock")
    for column in columns:
        table.add_column(column, justify="right" if "price" in column or column in numeric else "left")
    for row in rows:
        table.add_row(*cells(row[c] for c in columns), style=_STATUS_COLOURS.get(row["status"]))
    return table


# The price history's columns as scripts read them (--format tsv|json).
PRICE_HISTORY_FIELDS = (
    "id", "requested_at", "sent_at", "requested_by", "source", "sku", "account", "emag_offer_id",
    "currency", "old", "new", "status", "large_change_allowed", "emag_answer", "emag_messages",
    "answered_at", "reread_found", "reread_source", "reread_at", "reread_prices", "error",
    # stock updates (and which kind a row is), after the price columns earlier versions listed
    "kind", "warehouse_id", "old_stock", "new_stock", "reread_stock", "mass_zero_allowed",
)  # fmt: skip
INTERRUPTED_NOTE = (
    "interrupted: the run sending it stopped before eMAG answered; the next price or stock run of the "
    "account (or its next sync) reads eMAG and records what it holds"
)


def price_history_listing(
    engine: Engine,
    *,
    limit: int = 20,
    sku: str | None = None,
    account: str | None = None,
    kind: Kind | None = None,
) -> Listing:
    """The offer-update audit (prices and stock, or one ``kind``), newest first; 'sending' rows of a run
    that is gone show as interrupted."""
    rows = price_history(engine, limit=limit, sku=sku, account=account, kind=kind)
    with engine.connect() as conn:
        sending = price_senders(conn)
    title = {None: "Offer updates", "price": "Price updates", "stock": "Stock updates"}[kind]
    table = Table(title=f"{title} (newest first)", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for column in (
        "id",
        "when UTC",
        "who",
        "SKU",
        "account",
        "old -> new",
        "status",
        "eMAG answer",
        "re-read",
    ):
        table.add_column(column, no_wrap=column in ("when UTC", "status"))
    records = []
    for row in rows:
        status = row.status
        if status == "sending" and account_key(row.account) not in sending:
            status = "interrupted"
        table.add_row(
            str(row.id),
            f"{row.sent_at or row.requested_at:%Y-%m-%d %H:%M:%S}",
            Text(f"{row.requested_by} ({row.source})"),
            Text(row.sku),
            Text(row.account),
            Text(_changes(row)),
            Text(status + _allowed(row)),
            Text(_answer(row)),
            Text(_reread(row)),
            style=_STATUS_COLOURS.get(status),
        )
        record = {name: getattr(row, name, None) for name in PRICE_HISTORY_FIELDS}
        if row.kind == "stock":  # its own values, not the price columns' nulls
            record |= {"old": {"stock": row.old_stock}, "new": {"stock": row.new_stock}}
        records.append(record | {"status": status, "account": row.account})
    notes = [INTERRUPTED_NOTE] if any(r["status"] == "interrupted" for r in records) else []
    if notes:
        table.caption = caption(notes)
        table.caption_justify = "left"
    return Listing(PRICE_HISTORY_FIELDS, records, table, notes)


def _allowed(row: AuditRow) -> str:
    if row.large_change_allowed:
        return " (large change allowed)"
    return " (mass zero allowed)" if row.mass_zero_allowed else ""


def _changes(row: AuditRow) -> str:
    if row.kind == "stock":
        old = "?" if row.old_stock is None else str(row.old_stock)
        return f"stock {old} -> {row.new_stock} (warehouse {row.warehouse_id})"
    names = {"sale_price": "price", "min_sale_price": "min", "max_sale_price": "max"}
    lines = [
        f"{names[name]} {money_text(row.old[name])} -> {money_text(row.new[name])}"
        for name in names
        if name == "sale_price" or row.old[name] != row.new[name]
    ]
    return "\n".join(lines) + (f" {row.currency}" if row.currency else "")


def _answer(row: AuditRow) -> str:
    if row.emag_answer is None:
        return "-"
    if row.emag_answer == "refused":
        return "refused: " + "; ".join(row.emag_messages)
    if row.emag_answer in ("no-answer", "unavailable"):
        said = "no answer" if row.emag_answer == "no-answer" else "eMAG unavailable"
        return f"{said} ({row.error})" if row.error else said
    return row.emag_answer


def _reread(row: AuditRow) -> str:
    if row.reread_found is None:
        return "-"
    when = f", {row.reread_at:%m-%d %H:%M:%S}" if row.reread_at else ""
    found = f"{row.reread_found} ({row.reread_source or 'save'}{when})"
    if row.reread_found == "other prices" and row.reread_prices:
        found += ": " + ", ".join(f"{k} {v}" for k, v in row.reread_prices.items())
    if row.reread_found == "other stock" and row.reread_stock is not None:
        found += f": stock {row.reread_stock}"
    return found


DQ_FIELDS = ("account", "status", "expectation", "severity", "result", "observed", "details", "report_url")


def dq_listing(result: DQResult) -> Listing:
    """A checkpoint's rows."""
    styles = {"pass": "green", "FAIL": "red", "n/a": "dim"}
    table = Table(title=f"Data quality {result.account.name}: {result.status}", title_justify="left")
    for column in ("expectation", "severity", "result", "observed value"):
        table.add_column(column)
    for row in result.rows:
        style = styles[row.outcome] if row.severity == "critical" or row.passed is not False else "yellow"
        table.add_row(*cells([row.name, row.severity]), Text(row.outcome, style=style), Text(row.observed))
    records = [
        {
            "account": result.account.name, "status": result.status, "expectation": row.name,
            "severity": row.severity, "result": row.outcome, "observed": row.observed, "details": row.details,
            "report_url": result.report_url,
        }
        for row in result.rows
    ]  # fmt: skip
    return Listing(DQ_FIELDS, records, table)
