"""``emag-sync update-price`` and ``offer-history`` (alias ``price-history``): the price rules, CSV input
and audit of ``emag_sync.prices`` in the command line's terms."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import NoReturn

import typer

from emag_sync.cli.exit import fail
from emag_sync.cli.output import OutputFormat, format_option
from emag_sync.errors import EmagSyncError, PriceFix, PriceUpdateError

# Refusals in the command line's terms (the rules name the fix, see emag_sync.errors.PriceFix).
CLI_FIXES: dict[PriceFix, str] = {
    PriceFix.GIVE_MIN_PRICE: "give one with --min-price",
    PriceFix.GIVE_MAX_PRICE: "give one with --max-price",
    PriceFix.CHANGE_PRICE_OR_RANGE: "change the price or pass --min-price/--max-price",
    PriceFix.ALLOW_LARGE_CHANGE: "pass --allow-large-change if the change is intended",
}


def _fail_price(exc: EmagSyncError) -> NoReturn:
    fail(exc.worded(CLI_FIXES) if isinstance(exc, PriceUpdateError) else str(exc))


def update_price(
    sku: str | None = typer.Option(None, "--sku", help="the offer's SKU (part_number), e.g. EMG469"),
    account: str | None = typer.Option(
        None, "--account", help="the account's registered name, e.g. main or bg-fbe"
    ),
    price: str | None = typer.Option(None, "--price", help="new sale price ex-VAT, e.g. 99.90"),
    min_price: str | None = typer.Option(None, "--min-price", help="new min_sale_price, else the stored"),
    max_price: str | None = typer.Option(None, "--max-price", help="new max_sale_price, else the stored"),
    file: Path | None = typer.Option(
        None, "--file", help="CSV with columns sku,account,price[,min_price,max_price] for a bulk update"
    ),
    encoding: str | None = typer.Option(
        None,
        "--encoding",
        help="the --file's encoding when it is neither UTF-8 nor UTF-16 with a BOM, e.g. cp1250 (Excel, RO)",
    ),
    allow_large_change: bool = typer.Option(
        False,
        "--allow-large-change",
        help="allow sale prices further than EMAG_MAX_PRICE_CHANGE (default 30%) from the current ones",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="look up, show and validate; send nothing"),
    output: OutputFormat = format_option(),
) -> None:
    """Set offer prices on eMAG (offer/save) and in the database, audited: one offer, or a CSV of many."""

    from emag_sync.cli import console as screen
    from emag_sync.cli.output import Listing, show
    from emag_sync.db import engine_from_settings
    from emag_sync.prices import apply, rules
    from emag_sync.prices.audit import Requester
    from emag_sync.prices.csv_input import parse_price_csv, read_price_file
    from emag_sync.prices.results import RESULT_COLUMNS, result_rows, summary
    from emag_sync.registry import input_accounts
    from emag_sync.settings import get_settings

    # Beside TSV or JSON of the per-line results, what is said on the way goes to stderr.
    console = screen.console if output is OutputFormat.TABLE else screen.err_console

    single = [name for name, value in (("--sku", sku), ("--account", account), ("--price", price)) if value]
    if file is not None and (single or min_price or max_price):
        fail("give either --file or --sku/--account/--price, not both")
    if file is None and len(single) < 3:
        fail("give --sku, --account and --price (or --file prices.csv)")
    if encoding is not None and file is None:
        fail("--encoding is for --file")
    if output is not OutputFormat.TABLE and file is None:
        fail(f"--format {output.value} is for --file (its per-line results)")
    try:
        csv_text = read_price_file(file, encoding) if file is not None else None
        if file is None:
            rules.check_numbers(sku or "", account or "", price, min_price, max_price)
        settings = get_settings()
        engine = engine_from_settings(settings)
        registered = input_accounts(engine, settings, [account] if account else [])
        request = None
        if file is None:
            request = rules.make_request(
                sku or "", account or "", price, min_price, max_price,
                accounts=registered, allow_large_change=allow_large_change,
            )  # fmt: skip
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except EmagSyncError as exc:
        _fail_price(exc)

    def notify(line: str) -> None:
        console.print(line)

    limit = settings.emag_max_price_change
    try:
        with apply.emag_writers(settings) as writer_for:
            if request is not None:
                result = apply.run_single(
                    engine, request, writer_for, Requester(apply.requested_by_os_user(), "cli"),
                    max_change=limit, show=lambda plan: console.print(screen.changes_table(plan)),
                    notify=notify, dry_run=dry_run,
                )  # fmt: skip
                if result is None:
                    console.print(f"{request.where}: valid; nothing sent (--dry-run)")
                elif not result.ok:
                    fail(f"{request.where}: {result.status}: {result.text(CLI_FIXES)}")
                else:
                    console.print(f"{request.where}: {result.text(CLI_FIXES)}")
                return
            parsed = parse_price_csv(
                csv_text or "", accounts=registered, allow_large_change=allow_large_change
            )
            results = apply.run_bulk(
                engine, parsed.requests, writer_for, Requester(apply.requested_by_os_user(), "cli-bulk"),
                max_change=limit, notify=notify, dry_run=dry_run,
            )  # fmt: skip
    except EmagSyncError as exc:
        _fail_price(exc)
    finally:
        engine.dispose()
    rows = result_rows(results, parsed.problems, CLI_FIXES)
    show([Listing(RESULT_COLUMNS, rows, screen.results_table(rows))], output)
    console.print(f"price updates: {summary(rows)}")
    ok = {"applied", "not-sent"} if dry_run else {"applied"}
    if any(row["status"] not in ok for row in rows):
        raise typer.Exit(1)


class UpdateKind(StrEnum):
    PRICE = "price"
    STOCK = "stock"


def price_history(
    limit: int = typer.Option(20, "--limit", min=1, help="how many offer updates to show"),
    sku: str | None = typer.Option(None, "--sku", help="only this SKU"),
    account: str | None = typer.Option(None, "--account", help="only this account (its name)"),
    kind: UpdateKind | None = typer.Option(
        None, "--kind", case_sensitive=False, help="only price or only stock updates (default: both)"
    ),
    output: OutputFormat = format_option(),
) -> None:
    """Recent offer updates (prices and stock), newest first: who, old -> new, eMAG's answer, what a
    re-read found. (price-history is the same command, by its earlier name.)

    Updates whose run stopped before eMAG answered show as interrupted until the next price or stock run
    of the account (or a sync) reads eMAG and records what it holds.
    """
    from sqlalchemy.exc import DBAPIError

    from emag_sync.cli.console import price_history_listing
    from emag_sync.cli.output import show
    from emag_sync.db import database_error, engine_from_settings, first_line
    from emag_sync.registry import get_account, unknown_account
    from emag_sync.settings import get_settings

    which = None if account is None else account.strip().lower()
    try:
        engine = engine_from_settings(get_settings())
        if which is not None and get_account(engine, which) is None:
            raise unknown_account(engine, which)
    except EmagSyncError as exc:
        fail(str(exc))
    try:
        listing = price_history_listing(
            engine, limit=limit, sku=sku, account=which, kind=None if kind is None else kind.value
        )
        show([listing], output)
    except DBAPIError as exc:
        fail(str(database_error(exc, engine.url) or f"the database does not answer: {first_line(exc)}"))
    finally:
        engine.dispose()
