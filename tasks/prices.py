"""The price-update steps: one offer from the UI form, or many from CSV text; their verdicts as an artifact."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE

from emag_sync.db import engine_from_settings
from emag_sync.prices.apply import PriceUpdateResult, emag_writers, result_rows, run_bulk, run_single, summary
from emag_sync.prices.csv_input import parse_price_csv
from emag_sync.prices.rules import PlannedUpdate, change_rows, make_request
from emag_sync.settings import get_settings
from tasks.outcomes import run_step

ARTIFACT_KEY = "emag-price-updates"


def _who() -> tuple[str, str]:
    """(requested_by, flow_run_id) for the audit rows of this flow run."""
    return f"prefect:{runtime.flow_run.name}", str(runtime.flow_run.id)


def update_offer_price(
    sku: str, account: str, price: str, min_price: str | None, max_price: str | None
) -> PriceUpdateResult:
    """Look up, validate and send one price; raises PriceUpdateError when refused before eMAG is asked."""
    from prefect.logging import get_run_logger

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


def update_offer_prices_bulk(csv_text: str) -> list[dict[str, str]]:
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


def publish_results(rows: Sequence[dict[str, str]]) -> str | None:
    """The result table as a Prefect table artifact when running inside a flow run; its id, else None."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    artifact_id = create_table_artifact(
        table=[dict(row) for row in rows],
        key=ARTIFACT_KEY,
        description=f"eMAG price updates: {summary(rows)}",
    )
    return str(artifact_id)


@task(name="update-offer-price", task_run_name="update-price-{account}-{sku}", cache_policy=NO_CACHE)
def update_offer_price_task(
    sku: str, account: str, price: str, min_price: str | None, max_price: str | None
) -> PriceUpdateResult:
    """Prefect task: one price update; Failed in one line when it is refused before eMAG is asked."""
    return run_step(update_offer_price, sku, account, price, min_price, max_price)


@task(name="update-offer-prices-bulk", task_run_name="update-offer-prices-bulk", cache_policy=NO_CACHE)
def update_offer_prices_bulk_task(csv_text: str) -> list[dict[str, str]]:
    """Prefect task: every CSV line validated, the valid ones sent; the per-line verdicts."""
    return run_step(update_offer_prices_bulk, csv_text)


@task(name="publish-price-results", task_run_name="publish-price-results", cache_policy=NO_CACHE)
def publish_results_task(rows: Sequence[dict[str, str]]) -> str | None:
    """Prefect task: the per-line verdicts as the ``emag-price-updates`` table artifact."""
    return publish_results(rows)
