"""One account's sync: count, then pages → transform → load, one transaction per batch, resumable."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import islice

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import Engine, select

from emag_sync.db import database_url, make_engine
from emag_sync.errors import IncompleteReadError
from emag_sync.schema import sync_runs
from emag_sync.settings import AccountType, get_settings
from tasks.client import EmagClient, Page, StatsSnapshot
from tasks.load import deactivate_missing, load_batch
from tasks.progress import ProgressReporter
from tasks.runs import (
    abandon_run,
    abandon_unfinished,
    account_lock,
    fail_run,
    find_resumable_run,
    finish_run,
    get_run,
    resume_run,
    start_run,
)
from tasks.secrets import resolve_account_config
from tasks.shared_limit import shared_limiter_for
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


@dataclass(frozen=True)
class SyncOptions:
    """The flow's run-time knobs for one account."""

    pages_per_batch: int = 5
    items_per_page: int = 100
    resume: bool = False
    wait_for_lock: bool = False


@dataclass
class AccountSummary:
    """What one account's sync did; also the shape of the run summary artifact's rows."""

    account: str
    run_id: int
    status: str
    resumed: bool
    expected_items: int
    pages: int
    records: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    deactivated: int
    api_requests: int
    rate_limited: int
    retries: int
    duration_seconds: float
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def batched(pages: Iterable[Page], size: int) -> Iterator[list[Page]]:
    """Consecutive pages, ``size`` at a time (the last batch may be shorter)."""
    iterator = iter(pages)
    while batch := list(islice(iterator, size)):
        yield batch


def _summary_from_row(engine: Engine, run_id: int) -> AccountSummary:
    run = get_run(engine, run_id)
    return AccountSummary(
        account=run.account_type,
        run_id=run_id,
        status=run.status,
        resumed=run.resumed_count > 0,
        expected_items=run.expected_items or 0,
        pages=run.last_committed_page,
        records=run.records_read,
        inserted=run.rows_inserted,
        updated=run.rows_updated,
        unchanged=run.rows_unchanged,
        rejected=run.rows_rejected,
        deactivated=run.rows_deactivated,
        api_requests=run.api_requests,
        rate_limited=run.rate_limited,
        retries=run.retries,
        duration_seconds=float(run.duration_seconds or 0),
        error=run.error,
    )


def _succeeded_in_flow_run(engine: Engine, account: AccountType, flow_run_id: str | None) -> int | None:
    """A retried Prefect flow run skips an account it already synced completely."""
    if flow_run_id is None:
        return None
    query = (
        select(sync_runs.c.id)
        .where(sync_runs.c.account_type == account.value)
        .where(sync_runs.c.flow_run_id == flow_run_id)
        .where(sync_runs.c.status == "succeeded")
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.scalar(query)


def sync_account(
    engine: Engine,
    client: EmagClient,
    account: AccountType,
    options: SyncOptions,
    *,
    flow_run_id: str | None = None,
    progress: ProgressReporter | None = None,
) -> AccountSummary:
    """Read the whole catalogue of ``account`` and load it batch by batch; resumes an unfinished run.

    Resumes when ``options.resume`` (the latest unfinished run of the account) or when this Prefect
    flow run already started one (the UI's Retry): pages up to the last committed one are not read again.
    """
    progress = progress or ProgressReporter(account)
    baseline = client.stats.snapshot()  # the count request belongs to the run too
    with account_lock(engine, account, wait=options.wait_for_lock):
        done = _succeeded_in_flow_run(engine, account, flow_run_id)
        if done is not None:
            _logger().info("%s: already synced by this flow run (run %s), skipping", account.label, done)
            return _summary_from_row(engine, done)

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
                "%s: resuming run %s after page %s", account.label, run_id, run.last_committed_page
            )
        else:
            if options.resume:
                _logger().info("%s: nothing to resume, starting a full read", account.label)
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
        return _read_and_load(
            engine, client, account, run_id, pages, options, expected_pages, progress, baseline
        )


def _read_and_load(
    engine: Engine,
    client: EmagClient,
    account: AccountType,
    run_id: int,
    pages: Generator[Page, None, None],
    options: SyncOptions,
    expected_pages: int,
    progress: ProgressReporter,
    seen: StatsSnapshot,
) -> AccountSummary:
    started = time.monotonic()
    pages_done, records_done = 0, 0
    try:
        with closing(pages):  # on a failure, stop the look-ahead reads at once
            for batch in batched(pages, options.pages_per_batch):
                records = [record for page in batch for record in page.records]
                page_numbers = [page.number for page in batch for _ in page.records]
                frames = transform_batch(records, account, pages=page_numbers, synced_at=datetime.now(UTC))
                now = client.stats.snapshot()
                result = load_batch(
                    engine,
                    run_id,
                    account,
                    frames,
                    last_page=batch[-1].number,
                    api_requests=now.requests - seen.requests,
                    rate_limited=now.rate_limited - seen.rate_limited,
                    retries=now.retries - seen.retries,
                )
                seen = now
                pages_done, records_done = batch[-1].number, records_done + len(records)
                _logger().info(
                    "%s: pages %s-%s committed: %s inserted, %s updated, %s unchanged, %s rejected",
                    account.label, batch[0].number, batch[-1].number,
                    result.inserted, result.updated, result.unchanged, result.rejected,
                )  # fmt: skip
                progress.report(pages_done, expected_pages, records_done)
        _check_complete(engine, account, run_id)
        deactivated = deactivate_missing(engine, run_id, account)
        now = client.stats.snapshot()
        finish_run(
            engine,
            run_id,
            deactivated=deactivated,
            api_requests=now.requests - seen.requests,
            rate_limited=now.rate_limited - seen.rate_limited,
            retries=now.retries - seen.retries,
            elapsed_seconds=time.monotonic() - started,
        )
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        now = client.stats.snapshot()
        fail_run(
            engine,
            run_id,
            error,
            elapsed_seconds=time.monotonic() - started,
            api_requests=now.requests - seen.requests,
            rate_limited=now.rate_limited - seen.rate_limited,
            retries=now.retries - seen.retries,
        )
        if isinstance(exc, IncompleteReadError):
            abandon_run(engine, run_id, error)  # resuming after the last page would find the same gap
        raise
    progress.report(max(pages_done, expected_pages), expected_pages, records_done)
    return _summary_from_row(engine, run_id)


def _check_complete(engine: Engine, account: AccountType, run_id: int) -> None:
    """Deactivation trusts the read only when it returned every record eMAG counted at the start.

    A page that came back short or empty too early, or records that moved between pages while the read
    went on (offset paging has no snapshot), would otherwise mark live offers inactive.
    """
    run = get_run(engine, run_id)
    returned = run.records_loaded + run.rows_rejected
    if run.expected_items is not None and returned < run.expected_items:
        raise IncompleteReadError(
            f"{account.value}: the read returned {returned} of the {run.expected_items} records eMAG counted "
            "at the start (a page ended early, or records moved between pages during the read); nothing "
            "was deactivated and the run will not be resumed: start a new sync"
        )


@task(name="sync-account", cache_policy=NO_CACHE, retries=0)
def sync_account_task(
    account: AccountType,
    options: SyncOptions,
    flow_run_id: str | None = None,
) -> AccountSummary:
    """Prefect task: builds the engine and client inside (they cannot be task inputs), then syncs.

    No task retries: transient API failures are retried by the client, and a rerun resumes instead.
    """
    settings = get_settings()
    config = resolve_account_config(settings, account)
    engine = make_engine(database_url(settings))
    try:
        with EmagClient(config, limiter=shared_limiter_for(config)) as client:
            return sync_account(engine, client, account, options, flow_run_id=flow_run_id)
    finally:
        engine.dispose()
