"""``emag-sync update-stock``: the stock rules, CSV input and the one offer-update machinery of
``emag_sync.prices`` in the command line's terms."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from emag_sync.cli.exit import fail
from emag_sync.cli.output import OutputFormat, format_option
from emag_sync.cli.prices import CLI_FIXES
from emag_sync.errors import EmagSyncError, PriceUpdateError


def _fail(exc: EmagSyncError) -> NoReturn:
    fail(exc.worded(CLI_FIXES) if isinstance(exc, PriceUpdateError) else str(exc))


def update_stock(
    sku: str | None = typer.Option(None, "--sku", help="the offer's SKU (part_number), e.g. EMG469"),
    account: str | None = typer.Option(None, "--account", help="a main account's registered name, e.g. main"),
    stock: str | None = typer.Option(
        None, "--stock", help="the warehouse's new stock, a whole number 0..65535"
    ),
    warehouse_id: str | None = typer.Option(
        None, "--warehouse-id", help="the warehouse (default 1, or the offer's only one)"
    ),
    file: Path | None = typer.Option(
        None, "--file", help="CSV with columns sku,account,stock[,warehouse_id] for a bulk update"
    ),
    encoding: str | None = typer.Option(
        None,
        "--encoding",
        help="the --file's encoding when it is neither UTF-8 nor UTF-16 with a BOM, e.g. cp1250 (Excel, RO)",
    ),
    allow_mass_zero: bool = typer.Option(
        False,
        "--allow-mass-zero",
        help="allow a file to set more than EMAG_MAX_ZERO_STOCK_SHARE (default 20%) of an account's active "
        "offers to 0",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="look up, read and validate; send nothing"),
    output: OutputFormat = format_option(),
) -> None:
    """Set MAIN offers' stock on eMAG (the light offer/save: id and stock) and in the database, audited:
    one offer, or a CSV of many. FBE stock is eMAG's warehouse and is never sent."""
    from emag_sync.accounts import AccountType
    from emag_sync.cli import console as screen
    from emag_sync.cli.output import Listing, show
    from emag_sync.db import engine_from_settings
    from emag_sync.prices import apply
    from emag_sync.prices.audit import Requester
    from emag_sync.prices.csv_input import parse_stock_csv, read_price_file
    from emag_sync.prices.results import STOCK_RESULT_COLUMNS, result_rows, summary
    from emag_sync.prices.stock import make_stock_request, parse_stock
    from emag_sync.registry import input_accounts
    from emag_sync.settings import get_settings

    console = screen.console if output is OutputFormat.TABLE else screen.err_console
    single = [name for name, value in (("--sku", sku), ("--account", account), ("--stock", stock)) if value]
    if file is not None and (single or warehouse_id):
        fail("give either --file or --sku/--account/--stock, not both")
    if file is None and len(single) < 3:
        fail("give --sku, --account and --stock (or --file stock.csv)")
    if encoding is not None and file is None:
        fail("--encoding is for --file")
    if allow_mass_zero and file is None:
        fail("--allow-mass-zero is for --file")
    if output is not OutputFormat.TABLE and file is None:
        fail(f"--format {output.value} is for --file (its per-line results)")
    try:
        csv_text = read_price_file(file, encoding) if file is not None else None
        if file is None:  # the numbers' form first: nothing is opened for a typo
            name = (account or "").strip().lower()
            label = AccountType(name).label if name in set(AccountType) else name
            where = f"{(sku or '').strip()} on eMAG {label}"
            parse_stock(stock, where=where)
            if warehouse_id is not None:
                parse_stock(warehouse_id, field_name="warehouse_id", where=where)
        settings = get_settings()
        engine = engine_from_settings(settings)
        registered = input_accounts(engine, settings, [account] if account else [])
        request = None
        if file is None:
            request = make_stock_request(sku or "", account or "", stock, warehouse_id, accounts=registered)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except EmagSyncError as exc:
        _fail(exc)

    try:
        with apply.emag_writers(settings) as writer_for:
            if request is not None:
                result = apply.run_stock_single(
                    engine, request, writer_for, Requester(apply.requested_by_os_user(), "cli"),
                    notify=console.print, dry_run=dry_run,
                )  # fmt: skip
                if result is None:
                    console.print(
                        f"{request.where}: stock {request.stock} is valid; nothing sent (--dry-run)"
                    )
                    return
                line = (
                    f"{request.where}: stock {_change(result.old_stock, request.stock, result.warehouse_id)}"
                )
                if not result.ok:
                    fail(f"{line}: {result.status}: {result.text(CLI_FIXES)}")
                console.print(f"{line}: {result.text(CLI_FIXES)}")
                return
            parsed = parse_stock_csv(csv_text or "", accounts=registered)
            results = apply.run_stock_bulk(
                engine, parsed.requests, writer_for, Requester(apply.requested_by_os_user(), "cli-bulk"),
                max_zero_share=settings.emag_max_zero_stock_share, allow_mass_zero=allow_mass_zero,
                notify=console.print, dry_run=dry_run,
            )  # fmt: skip
    except EmagSyncError as exc:
        _fail(exc)
    finally:
        engine.dispose()
    rows = result_rows(results, parsed.problems, CLI_FIXES, STOCK_RESULT_COLUMNS)
    table = screen.results_table(rows, STOCK_RESULT_COLUMNS, "Stock updates")
    show([Listing(STOCK_RESULT_COLUMNS, rows, table)], output)
    console.print(f"stock updates: {summary(rows)}")
    ok = {"applied", "not-sent"} if dry_run else {"applied"}
    if any(row["status"] not in ok for row in rows):
        raise typer.Exit(1)


def _change(old: int | None, new: int, warehouse: int | None) -> str:
    return f"{'?' if old is None else old} -> {new} (warehouse {warehouse or 1})"
