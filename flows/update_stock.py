"""The stock flows: one MAIN offer's stock from the UI form (``emag-update-offer-stock``), or a CSV of many."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger
from prefect.states import Failed

from emag_sync.prices.form import AccountName, CsvText, OptionalWarehouseId, Sku, StockNumber
from emag_sync.prices.results import PriceUpdateResult, failure_line, summary
from tasks.prices import FORM_FIXES
from tasks.stock import (
    publish_stock_results_task,
    stock_rows_for_form,
    update_offer_stock_bulk_task,
    update_offer_stock_task,
)


@flow(name="emag-update-offer-stock", log_prints=False)
def emag_update_offer_stock(
    sku: Sku, account: AccountName, stock: StockNumber, warehouse_id: OptionalWarehouseId = None
) -> dict[str, str] | State[Any]:
    """Set one MAIN offer's stock on eMAG (the light offer/save: id and stock), then in the database.

    Args:
        sku: The offer's SKU (eMAG part_number), e.g. EMG469.
        account: The registered main account that holds the offer, by name (e.g. main, bg-main). FBE stock
            is eMAG's warehouse and is refused.
        stock: The warehouse's new stock, a whole number 0..65535.
        warehouse_id: The warehouse; leave empty for warehouse 1 (or the offer's only one).
    """
    state = update_offer_stock_task(sku, account, stock, warehouse_id, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)
    result: PriceUpdateResult = state.result()
    rows = stock_rows_for_form([result])
    publish_stock_results_task(rows)
    get_run_logger().info("%s: %s: %s", result.request.where, result.status, result.text(FORM_FIXES))
    if not result.ok:
        return Failed(message=failure_line(rows[0]))
    return rows[0]


@flow(name="emag-update-offer-stock-bulk", log_prints=False)
def emag_update_offer_stock_bulk(
    csv_text: CsvText, allow_mass_zero: bool = False
) -> list[dict[str, str]] | State[Any]:
    """Many MAIN offers' stock at once from CSV text; good lines are applied even when others fail, and the
    run fails when any line did not apply.

    Args:
        csv_text: The CSV itself: a header sku,account,stock[,warehouse_id], then one offer per line (stock a
            whole number 0..65535; warehouse_id may be left empty for warehouse 1).
        allow_mass_zero: Turn on to allow setting more than EMAG_MAX_ZERO_STOCK_SHARE (20% unless set
            otherwise) of an account's active offers to 0 at once; off, such a file is refused whole as a
            likely broken export.
    """
    state = update_offer_stock_bulk_task(csv_text, allow_mass_zero, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)
    rows: list[dict[str, str]] = state.result()
    publish_stock_results_task(rows)
    get_run_logger().info("stock updates: %s", summary(rows))
    failed = [row for row in rows if row["status"] != "applied"]
    if failed:
        return Failed(
            message=f"{len(failed)} of {len(rows)} stock update line(s) did not apply; see the "
            f"'emag-stock-updates' artifact (first: {failure_line(failed[0])})"
        )
    return rows
