"""The ``emag-update-offer-price`` flows: one offer's price from the UI form, or a CSV of many, sent to eMAG."""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

from emag_sync.db import engine_from_settings
from emag_sync.errors import PriceUpdateError
from emag_sync.settings import get_settings
from tasks.prices import (
    PlannedUpdate,
    PriceUpdateResult,
    change_rows,
    emag_writers,
    make_request,
    parse_price_csv,
    publish_results,
    result_rows,
    run_bulk,
    run_single,
    summary,
)


def _who() -> tuple[str, str]:
    """(requested_by, flow_run_id) for the audit rows of this flow run."""
    return f"prefect:{runtime.flow_run.name}", str(runtime.flow_run.id)


@task(name="update-offer-price", cache_policy=NO_CACHE)
def update_offer_price_task(
    sku: str, account: str, price: str, min_price: str | None, max_price: str | None
) -> PriceUpdateResult:
    """Look up, validate and send one price; raises PriceUpdateError when refused before or by eMAG."""
    logger = get_run_logger()
    request = make_request(sku, account, price, min_price, max_price)
    settings = get_settings()
    engine = engine_from_settings(settings)
    requested_by, flow_run_id = _who()

    def show(plan: PlannedUpdate) -> None:
        for name, now, new in change_rows(plan):
            logger.info("%s %s: %s: %s -> %s", plan.offer.sku, plan.offer.account.label, name, now, new)

    try:
        with emag_writers(settings) as writer_for:
            result = run_single(
                engine, request, writer_for,
                requested_by=requested_by, source="flow", flow_run_id=flow_run_id, show=show,
            )  # fmt: skip
    finally:
        engine.dispose()
    assert result is not None  # not a dry run
    return result


@task(name="update-offer-prices-bulk", cache_policy=NO_CACHE)
def update_offer_prices_bulk_task(csv_text: str) -> list[dict[str, str]]:
    """Validate every CSV line, send the valid ones in chunks of at most 50; the per-line verdicts."""
    parsed = parse_price_csv(csv_text)
    settings = get_settings()
    engine = engine_from_settings(settings)
    requested_by, flow_run_id = _who()
    try:
        with emag_writers(settings) as writer_for:
            results = run_bulk(
                engine, parsed.requests, writer_for,
                requested_by=requested_by, source="flow", flow_run_id=flow_run_id,
            )  # fmt: skip
    finally:
        engine.dispose()
    return result_rows(results, parsed.problems)


@flow(name="emag-update-offer-price", log_prints=False)
def emag_update_offer_price(
    sku: str,
    account: str,
    price: str,
    min_price: str | None = None,
    max_price: str | None = None,
) -> dict[str, str]:
    """Set one offer's ex-VAT sale price (and optionally its min/max) on eMAG, then in the database.

    Prices are text (e.g. "35.00") so no float ever touches them; account is main or fbe.
    """
    result = update_offer_price_task(sku, account, price, min_price, max_price)
    rows = result_rows([result])
    publish_results(rows)
    get_run_logger().info("%s on eMAG %s: %s: %s", sku, account.upper(), result.status, result.message)
    if not result.ok:
        raise PriceUpdateError(f"{result.request.where}: {result.status}: {result.message}")
    return rows[0]


@flow(name="emag-update-offer-prices-bulk", log_prints=False)
def emag_update_offer_prices_bulk(csv_text: str) -> list[dict[str, str]]:
    """Many prices at once from CSV text (``sku,account,price[,min_price,max_price]``).

    Good lines are applied even when others fail; the run fails when any line did not apply.
    """
    rows = update_offer_prices_bulk_task(csv_text)
    publish_results(rows)
    get_run_logger().info("price updates: %s", summary(rows))
    failed = [row for row in rows if row["status"] != "applied"]
    if failed:
        raise PriceUpdateError(
            f"{len(failed)} of {len(rows)} price update line(s) did not apply; see the "
            "'emag-price-updates' artifact (first: line "
            f"{failed[0]['line']}: {failed[0]['message']})"
        )
    return rows
