"""Extract one account: count, then pages → transform → load, one transaction per batch, resumable."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from itertools import islice

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine

from emag_sync.accounts import AccountType
from emag_sync.api import CatalogueCount, EmagClient, Page, RequestCounters, open_client
from emag_sync.db import database_url, make_engine
from emag_sync.errors import IncompleteReadError
from emag_sync.locks import account_lock
from emag_sync.options import SyncOptions
from emag_sync.runs import (
    RunRow,
    abandon_run,
    abandon_unfinished,
    fail_run,
    find_resumable_run,
    finish_run,
    get_run,
    resume_run,
    start_run,
    succeeded_in_flow_run,
)
from emag_sync.settings import get_settings
from tasks.artifacts import ProgressReporter
from tasks.load import deactivate_missing, load_batch
from tasks.outcomes import run_step
from tasks.transform import transform_batch

log = logging.getLogger(__name__)


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a flow/task run (shown in the UI), else this module's logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


class _Meter:
    """The client's request counters since the last reading: each batch records its own requests."""

    def __init__(self, client: EmagClient) -> None:
        self._client = client
        self._last = client.stats.counters()

    def take(self) -> RequestCounters:
        now = self._client.stats.counters()
        taken, self._last = now - self._last, now
        return taken


def batched(pages: Iterable[Page], size: int) -> Iterator[list[Page]]:
    """Consecutive pages, ``size`` at a time (the last batch may be shorter)."""
    iterator = iter(pages)
    while batch := list(islice(iterator, size)):
        yield batch


def sync_account(
    engine: Engine,
    client: EmagClient,
    account: AccountType,
    options: SyncOptions,
    *,
    flow_run_id: str | None = None,
    count: CatalogueCount | None = None,
    progress: ProgressReporter | None = None,
) -> RunRow:
    """Read the whole catalogue of ``account`` and load it batch by batch; resumes an unfinished run.

    Resumes when ``options.resume`` (the latest unfinished run of the account) or when this Prefect
    flow run already started one (the UI's Retry): pages up to the last committed one are not read again.
    ``count`` is the preflight's ``product_offer/count``, used when no other sync ran since.
    """
    progress = progress or ProgressReporter(account)
    meter = _Meter(client)  # the count request belongs to the run too
    with account_lock(engine, account, wait=options.wait_for_lock) as waited:
        done = succeeded_in_flow_run(engine, account, flow_run_id)
        if done is not None:
            _logger().info("%s: already synced by this flow run (run %s), skipping", account.value, done)
            return get_run(engine, done)

        resumable = (
            find_resumable_run(engine, account, flow_run_id=None if options.resume else flow_run_id)
            if (options.resume or flow_run_id)
            else None
        )
        if resumable is not None:
            run = resume_run(engine, resumable.id)
            count = None  # re-counted by the read: the catalogue may have changed since
            run_id, items_per_page = run.id, run.items_per_page
            start_page, expected_pages = run.last_committed_page + 1, run.expected_pages or 0
            _logger().info(
                "%s: resuming run %s after page %s", account.value, run_id, run.last_committed_page
            )
        else:
            if options.resume:
                _logger().info("%s: nothing to resume, starting a full read", account.value)
            if count is None or waited:
                count = client.count()
            items_per_page, start_page, expected_pages = options.items_per_page, 1, count.pages
            if count.items_per_page != items_per_page:
                expected_pages = -(-count.items // items_per_page)
            run_id = start_run(
                engine,
                account,
                flow_run_id=flow_run_id,
                items_per_page=items_per_page,
                pages_per_batch=options.pages_per_batch,
                expected_items=count.items,
                expected_pages=expected_pages,
            )
            abandon_unfinished(engine, account, except_run_id=run_id)
        pages = client.iter_pages(items_per_page=items_per_page, start_page=start_page, count=count)
        return _read_and_load(engine, account, run_id, pages, options, expected_pages, progress, meter)


def _read_and_load(
    engine: Engine,
    account: AccountType,
    run_id: int,
    pages: Generator[Page, None, None],
    options: SyncOptions,
    expected_pages: int,
    progress: ProgressReporter,
    meter: _Meter,
) -> RunRow:
    started = time.monotonic()
    pages_done, records_done = 0, 0
    try:
        with closing(pages):  # on a failure, stop the look-ahead reads at once
            for batch in batched(pages, options.pages_per_batch):
                records = [record for page in batch for record in page.records]
                page_numbers = [page.number for page in batch for _ in page.records]
                frames = transform_batch(records, account, pages=page_numbers, synced_at=datetime.now(UTC))
                counts = load_batch(
                    engine, run_id, account, frames, last_page=batch[-1].number, counters=meter.take()
                )
                pages_done, records_done = batch[-1].number, records_done + len(records)
                _logger().info(
                    "%s: pages %s-%s committed: %s inserted, %s updated, %s unchanged, %s rejected",
                    account.value, batch[0].number, batch[-1].number,
                    counts.inserted, counts.updated, counts.unchanged, counts.rejected,
                )  # fmt: skip
                progress.report(pages_done, expected_pages, records_done)
        _check_complete(engine, account, run_id)
        deactivated = deactivate_missing(engine, run_id, account)
        finish_run(
            engine,
            run_id,
            deactivated=deactivated,
            counters=meter.take(),
            elapsed_seconds=time.monotonic() - started,
        )
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        fail_run(engine, run_id, error, elapsed_seconds=time.monotonic() - started, counters=meter.take())
        if isinstance(exc, IncompleteReadError):
            abandon_run(engine, run_id, error)  # resuming after the last page would find the same gap
        raise
    progress.report(max(pages_done, expected_pages), expected_pages, records_done)
    return get_run(engine, run_id)


def _check_complete(engine: Engine, account: AccountType, run_id: int) -> None:
    """Deactivation trusts the read only when it returned every record eMAG counted at the start.

    A page that came back short or empty too early, or records that moved between pages while the read
    went on (offset paging has no snapshot), would otherwise mark live offers inactive.
    """
    run = get_run(engine, run_id)
    returned = run.records_loaded + run.rows_rejected
    if run.expected_items is not None and returned < run.expected_items:
        raise IncompleteReadError(
            f"the read returned {returned} of the {run.expected_items} records eMAG counted at the start "
            "(a page ended early, or records moved between pages during the read); nothing was deactivated "
            "and the run will not be resumed: start a new sync",
            account=account,
        )


def sync_account_with_settings(
    account: AccountType, options: SyncOptions, flow_run_id: str | None, count: CatalogueCount | None
) -> RunRow:
    """``sync_account`` against the configured database and eMAG (engine and client opened here)."""
    settings = get_settings()
    engine = make_engine(database_url(settings))
    try:
        with open_client(settings, account) as client:
            return sync_account(engine, client, account, options, flow_run_id=flow_run_id, count=count)
    finally:
        engine.dispose()


@task(name="sync-account", task_run_name="sync-{account}", cache_policy=NO_CACHE, retries=0)
def sync_account_task(
    account: AccountType,
    options: SyncOptions,
    flow_run_id: str | None = None,
    count: CatalogueCount | None = None,
) -> RunRow:
    """Prefect task: one account's sync; Failed in one line on an expected failure.

    No task retries: transient API failures are retried by the client, and a rerun resumes instead.
    The engine and client are opened inside: they cannot be task inputs.
    """
    return run_step(sync_account_with_settings, account, options, flow_run_id, count, account=account)
