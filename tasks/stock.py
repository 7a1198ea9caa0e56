"""The stock-update steps: one MAIN offer from the UI form, or many from CSV text; their verdicts as an
artifact. They send through the price updates' machinery (emag_sync.prices.apply)."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.accounts import Account
from emag_sync.db import engine_from_settings
from emag_sync.escaping import markdown_text
from emag_sync.prices.apply import emag_writers, run_stock_bulk, run_stock_single
from emag_sync.prices.csv_input import parse_stock_csv
from emag_sync.prices.results import STOCK_RESULT_COLUMNS, PriceUpdateResult, result_rows, summary
from emag_sync.prices.stock import make_stock_request
from emag_sync.registry import input_accounts
from emag_sync.settings import get_settings
from tasks.outcomes import run_step
from tasks.prices import FORM_FIXES, requester

ARTIFACT_KEY = "emag-stock-updates"


def stock_rows_for_form(results: Sequence[PriceUpdateResult]) -> list[dict[str, str]]:
    """The verdict table of stock updates, refusals worded for the Prefect form."""
    return result_rows(results, (), FORM_FIXES, STOCK_RESULT_COLUMNS)


def update_offer_stock(
    sku: str, account: str | Account, stock: str | int, warehouse_id: str | int | None = None
) -> PriceUpdateResult:
    """Check, read and send one offer's stock; raises StockUpdateError when refused before eMAG is asked
    (an FBE account before any request)."""
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    settings = get_settings()
    engine = engine_from_settings(settings)
    request = make_stock_request(
        sku, account, stock, warehouse_id, accounts=input_accounts(engine, settings, [str(account)])
    )
    try:
        with emag_writers(settings) as writer_for:
            result = run_stock_single(engine, request, writer_for, requester(), notify=logger.info)
    finally:
        engine.dispose()
    assert result is not None  # not a dry run
    return result


def update_offer_stock_bulk(csv_text: str, allow_mass_zero: bool = False) -> list[dict[str, str]]:
    """Validate every CSV line, refuse a mass zeroing unless allowed, send the valid ones in chunks of at
    most 50; the per-line verdicts."""
    from prefect.logging import get_run_logger

    settings = get_settings()
    engine = engine_from_settings(settings)
    parsed = parse_stock_csv(csv_text, accounts=input_accounts(engine, settings))
    try:
        with emag_writers(settings) as writer_for:
            results = run_stock_bulk(
                engine, parsed.requests, writer_for, requester(),
                max_zero_share=settings.emag_max_zero_stock_share, allow_mass_zero=allow_mass_zero,
                notify=get_run_logger().info,
            )  # fmt: skip
    finally:
        engine.dispose()
    return result_rows(results, parsed.problems, FORM_FIXES, STOCK_RESULT_COLUMNS)


def publish_stock_results(rows: Sequence[dict[str, str]]) -> str | None:
    """The result table as the ``emag-stock-updates`` table artifact inside a flow run; its id, else None."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    artifact_id = create_table_artifact(
        table=[{column: markdown_text(value) for column, value in row.items()} for row in rows],
        key=ARTIFACT_KEY,
        description=f"eMAG stock updates: {summary(rows)}",
    )
    return str(artifact_id)


@task(name="update-offer-stock", task_run_name="update-stock-{account}-{sku}", cache_policy=NO_CACHE)
def update_offer_stock_task(
    sku: str, account: str | Account, stock: str | int, warehouse_id: str | int | None = None
) -> PriceUpdateResult:
    """Prefect task: one stock update; Failed in one line when it is refused before eMAG is asked."""
    return run_step(update_offer_stock, sku, account, stock, warehouse_id)


@task(name="update-offer-stock-bulk", task_run_name="update-offer-stock-bulk", cache_policy=NO_CACHE)
def update_offer_stock_bulk_task(csv_text: str, allow_mass_zero: bool = False) -> list[dict[str, str]]:
    """Prefect task: every CSV line validated, the valid ones sent; the per-line verdicts."""
    return run_step(update_offer_stock_bulk, csv_text, allow_mass_zero)


@task(name="publish-stock-results", task_run_name="publish-stock-results", cache_policy=NO_CACHE)
def publish_stock_results_task(rows: Sequence[dict[str, str]]) -> str | None:
    """Prefect task: the per-line verdicts as the ``emag-stock-updates`` table artifact."""
    return publish_stock_results(rows)
