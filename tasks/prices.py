"""The price-update steps: one offer from the UI form, or many from CSV text; their verdicts as an artifact."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE

from emag_sync.accounts import Account
from emag_sync.db import engine_from_settings
from emag_sync.errors import PARAMETER_FIXES, PriceFix
from emag_sync.escaping import markdown_text
from emag_sync.prices.apply import emag_writers, run_bulk, run_single
from emag_sync.prices.audit import Requester
from emag_sync.prices.csv_input import CsvProblem, parse_price_csv
from emag_sync.prices.results import PriceUpdateResult, result_rows, summary
from emag_sync.prices.rules import PlannedUpdate, change_rows, make_request
from emag_sync.registry import input_accounts
from emag_sync.settings import get_settings
from tasks.outcomes import run_step

ARTIFACT_KEY = "emag-price-updates"
# The Prefect UI renders a table artifact's cells as markdown (links, HTML, headings); SKUs and eMAG's
# messages are data. Backslash escapes every construct a cell could start; prices pass unchanged.
# Refusals in the form's terms: its fields are the request's own (min_price, allow_large_change), which
# is also how a PriceUpdateError words itself, so run_step's one line reads the same.
FORM_FIXES: Mapping[PriceFix, str] = PARAMETER_FIXES


def requester() -> Requester:
    """Who asks, for the audit rows of this flow run."""
    return Requester(f"prefect:{runtime.flow_run.name}", "flow", str(runtime.flow_run.id))


def result_rows_for_form(
    results: Iterable[PriceUpdateResult], problems: Iterable[CsvProblem] = ()
) -> list[dict[str, str]]:
    """The verdict table, refusals worded for the Prefect form."""
    return result_rows(results, problems, FORM_FIXES)


def update_offer_price(
    sku: str,
    account: str | Account,
    price: str,
    min_price: str | None,
    max_price: str | None,
    allow_large_change: bool = False,
) -> PriceUpdateResult:
    """Look up, validate and send one price; raises PriceUpdateError when refused before eMAG is asked."""
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    settings = get_settings()
    engine = engine_from_settings(settings)
    request = make_request(
        sku, account, price, min_price, max_price,
        accounts=input_accounts(engine, settings, [str(account)]), allow_large_change=allow_large_change,
    )  # fmt: skip

    def show(plan: PlannedUpdate) -> None:
        for name, now, new in change_rows(plan):
            logger.info("%s: %s: %s -> %s", plan.request.where, name, now, new)

    try:
        with emag_writers(settings) as writer_for:
            result = run_single(
                engine, request, writer_for, requester(), max_change=settings.emag_max_price_change,
                show=show, notify=logger.info,
            )  # fmt: skip
    finally:
        engine.dispose()
    assert result is not None  # not a dry run
    return result


def update_offer_prices_bulk(csv_text: str, allow_large_change: bool = False) -> list[dict[str, str]]:
    """Validate every CSV line, send the valid ones in chunks of at most 50; the per-line verdicts."""
    from prefect.logging import get_run_logger

    settings = get_settings()
    engine = engine_from_settings(settings)
    parsed = parse_price_csv(
        csv_text, accounts=input_accounts(engine, settings), allow_large_change=allow_large_change
    )
    try:
        with emag_writers(settings) as writer_for:
            results = run_bulk(
                engine, parsed.requests, writer_for, requester(), max_change=settings.emag_max_price_change,
                notify=get_run_logger().info,
            )  # fmt: skip
    finally:
        engine.dispose()
    return result_rows_for_form(results, parsed.problems)


def publish_results(rows: Sequence[dict[str, str]]) -> str | None:
    """The result table as a Prefect table artifact when running inside a flow run; its id, else None."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    artifact_id = create_table_artifact(
        table=[{column: markdown_text(value) for column, value in row.items()} for row in rows],
        key=ARTIFACT_KEY,
        description=f"eMAG price updates: {summary(rows)}",
    )
    return str(artifact_id)


@task(name="update-offer-price", task_run_name="update-price-{account}-{sku}", cache_policy=NO_CACHE)
def update_offer_price_task(
    sku: str,
    account: str | Account,
    price: str,
    min_price: str | None,
    max_price: str | None,
    allow_large_change: bool = False,
) -> PriceUpdateResult:
    """Prefect task: one price update; Failed in one line when it is refused before eMAG is asked."""
    return run_step(update_offer_price, sku, account, price, min_price, max_price, allow_large_change)


@task(name="update-offer-prices-bulk", task_run_name="update-offer-prices-bulk", cache_policy=NO_CACHE)
def update_offer_prices_bulk_task(csv_text: str, allow_large_change: bool = False) -> list[dict[str, str]]:
    """Prefect task: every CSV line validated, the valid ones sent; the per-line verdicts."""
    return run_step(update_offer_prices_bulk, csv_text, allow_large_change)


@task(name="publish-price-results", task_run_name="publish-price-results", cache_policy=NO_CACHE)
def publish_results_task(rows: Sequence[dict[str, str]]) -> str | None:
    """Prefect task: the per-line verdicts as the ``emag-price-updates`` table artifact."""
    return publish_results(rows)
