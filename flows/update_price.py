"""The price flows: one offer's price from the UI form (``emag-update-offer-price``), or a CSV of many."""

from __future__ import annotations

from typing import Any

from prefect import State, flow, get_run_logger
from prefect.states import Failed

from emag_sync.prices.form import AccountName, CsvText, OptionalPriceText, PriceText, Sku
from emag_sync.prices.results import PriceUpdateResult, failure_line, summary
from tasks.prices import (
    FORM_FIXES,
    publish_results_task,
    result_rows_for_form,
    update_offer_price_task,
    update_offer_prices_bulk_task,
)


@flow(name="emag-update-offer-price", log_prints=False)
def emag_update_offer_price(
    sku: Sku,
    account: AccountName,
    price: PriceText,
    min_price: OptionalPriceText = None,
    max_price: OptionalPriceText = None,
    allow_large_change: bool = False,
) -> dict[str, str] | State[Any]:
    """Set one offer's ex-VAT sale price (and optionally its min/max) on eMAG, then in the database.

    Args:
        sku: The offer's SKU (eMAG part_number), e.g. EMG469.
        account: The registered account that holds the offer, by name (e.g. main, fbe, bg-main).
        price: New sale price without VAT, as text with up to 4 decimals, e.g. 99.90.
        min_price: New min_sale_price without VAT; leave empty to keep the stored one.
        max_price: New max_sale_price without VAT; leave empty to keep the stored one.
        allow_large_change: Turn on to allow a sale price more than EMAG_MAX_PRICE_CHANGE (30% unless set
            otherwise) away from the current one; off, such a change is refused as a likely typo.
    """
    state = update_offer_price_task(
        sku, account, price, min_price, max_price, allow_large_change, return_state=True
    )
    if state.is_failed():
        return Failed(message=state.message)
    result: PriceUpdateResult = state.result()
    rows = result_rows_for_form([result])
    publish_results_task(rows)
    get_run_logger().info("%s: %s: %s", result.request.where, result.status, result.text(FORM_FIXES))
    if not result.ok:
        return Failed(message=failure_line(rows[0]))
    return rows[0]


@flow(name="emag-update-offer-prices-bulk", log_prints=False)
def emag_update_offer_prices_bulk(
    csv_text: CsvText, allow_large_change: bool = False
) -> list[dict[str, str]] | State[Any]:
    """Many prices at once from CSV text; good lines are applied even when others fail, and the run fails
    when any line did not apply.

    Args:
        csv_text: The CSV itself: a header sku,account,price[,min_price,max_price], then one offer per
            line (prices without VAT, up to 4 decimals; min_price and max_price may be left empty).
        allow_large_change: Turn on to allow sale prices more than EMAG_MAX_PRICE_CHANGE (30% unless set
            otherwise) away from the current ones; off, such lines are refused as likely typos.
    """
    state = update_offer_prices_bulk_task(csv_text, allow_large_change, return_state=True)
    if state.is_failed():
        return Failed(message=state.message)
    rows: list[dict[str, str]] = state.result()
    publish_results_task(rows)
    get_run_logger().info("price updates: %s", summary(rows))
    failed = [row for row in rows if row["status"] != "applied"]
    if failed:
        return Failed(
            message=f"{len(failed)} of {len(rows)} price update line(s) did not apply; see the "
            f"'emag-price-updates' artifact (first: {failure_line(failed[0])})"
        )
    return rows
