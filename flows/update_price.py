"""The price flows: one offer's price from the UI form (``emag-update-offer-price``), or a CSV of many."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger
from prefect.states import Failed

from emag_sync.prices.apply import PriceUpdateResult, result_rows, summary
from tasks.prices import publish_results_task, update_offer_price_task, update_offer_prices_bulk_task


@flow(name="emag-update-offer-price", log_prints=False)
def emag_update_offer_price(
    sku: str,
    account: str,
    price: str,
    min_price: str | None = None,
    max_price: str | None = None,
) -> dict[str, str] | State[Any]:
    """Set one offer's ex-VAT sale price (and optionally its min/max) on eMAG, then in the database.

    Prices are text (e.g. "35.00") so no float ever touches them; account is main or fbe.
    """
    state = update_offer_price_task(sku, account, price, min_price, max_price, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)
    result: PriceUpdateResult = state.result()
    rows = result_rows([result])
    publish_results_task(rows)
    get_run_logger().info("%s on eMAG %s: %s: %s", sku, account.upper(), result.status, result.message)
    if not result.ok:
        return Failed(message=f"{result.request.where}: {result.status}: {result.message}")
    return rows[0]


@flow(name="emag-update-offer-prices-bulk", log_prints=False)
def emag_update_offer_prices_bulk(csv_text: str) -> list[dict[str, str]] | State[Any]:
    """Many prices at once from CSV text (``sku,account,price[,min_price,max_price]``).

    Good lines are applied even when others fail; the run fails when any line did not apply.
    """
    state = update_offer_prices_bulk_task(csv_text, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)
    rows: list[dict[str, str]] = state.result()
    publish_results_task(rows)
    get_run_logger().info("price updates: %s", summary(rows))
    failed = [row for row in rows if row["status"] != "applied"]
    if failed:
        return Failed(
            message=f"{len(failed)} of {len(rows)} price update line(s) did not apply; see the "
            f"'emag-price-updates' artifact (first: line {failed[0]['line']}: {failed[0]['message']})"
        )
    return rows
