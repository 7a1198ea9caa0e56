"""Extract one account: count, then pages → transform → load, one transaction per batch, resumable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from emag_sync.accounts import Account
from emag_sync.api import CatalogueCount, EmagClient, Page, RequestCounters, open_client
from emag_sync.api.paging import BY_ID
from emag_sync.db import database_error, database_url, describe, first_line, make_engine
from emag_sync.errors import (
    DatabaseUnavailableError,
    DeactivationLimitError,
    IncompleteReadError,
    SyncInterruptedError,
)
from emag_sync.locks import account_lock
from emag_sync.options import SyncOptions
from emag_sync.prices.reconcile import reconcile_interrupted_from_database
from emag_sync.records import RecordRejected, parse_sku
from emag_sync.run_row import BatchCounts, RunRow, RunStatus
from emag_sync.runs import (
    abandon_run,
    abandon_unfinished,
    fail_run,
    find_resumable_run,
    finish_run,
    get_run,
    mark_crashed,
    resume_run,
    start_run,
    succeeded_in_flow_run,
)
from emag_sync.settings import DEFAULT_MAX_DEACTIVATED_COUNT, get_settings
from emag_sync.stopping import stop_at_boundary
from tasks.artifacts import ProgressReporter
from tasks.load import active_products, deactivate, load_batch, missing_from_read
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
    account: Account,
    options: SyncOptions,
    *,
    flow_run_id: str | None = None,
    count: CatalogueCount | None = None,
    progress: ProgressReporter | None = None,
) -> RunRow:
    """Read the whole catalogue of ``account`` and load it batch by batch; a rerun resumes the unfinished run.

    Resumes when ``options.resume`` (the latest unfinished run of the account) or when this Prefect flow run
    already started one (the UI's Retry). A resumed attempt reads from the page after the last committed
    one to the end, then the pages before it again: eMAG's offset paging has no snapshot, so what changed
    upstream while the run was down ends exactly as a clean run would. ``count`` is the preflight's
    ``product_offer/count``, used when the lock was free (no other sync ran since).
    """
    progress = progress or ProgressReporter(account)
    meter = _Meter(client)  # the count request belongs to the run too
    with account_lock(engine, account, wait=options.wait_for_lock) as waited:
        mark_crashed(engine, account)  # under the lock, a 'running' row is a run whose process died
        done = succeeded_in_flow_run(engine, account, flow_run_id)
        if done is not None:
            _logger().info("%s: already synced by this flow run (run %s), skipping", account.title, done)
            return get_run(engine, done)

        resumable = (
            find_resumable_run(engine, account, flow_run_id=None if options.resume else flow_run_id)
            if (options.resume or flow_run_id)
            else None
        )
        if count is None or waited or resumable is not None:
            count = client.count()
        if resumable is not None:
            items_per_page = resumable.items_per_page
            run = resume_run(
                engine,
                resumable.id,
                expected_items=count.items,
                expected_pages=_pages_of(count, items_per_page),
            )
            run_id, resume_after = run.id, run.last_committed_page
            again = f"after page {resume_after} (then re-reading {page_ranges(range(1, resume_after + 1))})"
            _logger().info(
                "%s: resuming run %s %s", account.title, run_id,
                again if resume_after else "from the first page (it had committed none)",
            )  # fmt: skip
        else:
            if options.resume:
                _logger().info("%s: nothing to resume, starting a full read", account.title)
            items_per_page, resume_after = options.items_per_page, 0
            run_id = start_run(
                engine,
                account,
                flow_run_id=flow_run_id,
                items_per_page=items_per_page,
                pages_per_batch=options.pages_per_batch,
                expected_items=count.items,
                expected_pages=_pages_of(count, items_per_page),
            )
            abandon_unfinished(engine, account, except_run_id=run_id)
        pages = _catalogue(client, items_per_page, count, resume_after)
        return _read_and_load(engine, client, account, run_id, pages, options, progress, meter)


def page_ranges(numbers: Iterable[int]) -> str:
    """Page numbers in the order read, consecutive ones as a range: ``page 7``, ``pages 1-5``, ``pages 26,
    1-4`` (a resumed read's last page, then the committed ones read again)."""
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return ("page " if len(spans) == 1 and spans[0][0] == spans[0][1] else "pages ") + text


def _pages_of(count: CatalogueCount, items_per_page: int) -> int:
    return count.pages if count.items_per_page == items_per_page else -(-count.items // items_per_page)


def _catalogue(
    client: EmagClient, items_per_page: int, count: CatalogueCount, resume_after: int
) -> Generator[Page, None, None]:
    """Every page of the catalogue: from page 1, or after ``resume_after`` to the end and then 1..resume_after."""
    yield from client.iter_pages(items_per_page=items_per_page, start_page=resume_after + 1, count=count)
    if resume_after:
        yield from client.iter_pages(
            items_per_page=items_per_page, start_page=1, stop_page=resume_after, count=count
        )


def _load_pages(
    engine: Engine, account: Account, run_id: int, pages: list[Page], meter: _Meter
) -> BatchCounts:
    """Transform and load pages in one transaction (offers read by id keep the run's resume point)."""
    numbers = [page.number for page in pages for _ in page.records]
    frames = transform_batch(
        [record for page in pages for record in page.records],
        account,
        pages=numbers,
        read_at=[page.read_at for page in pages for _ in page.records],
        synced_at=datetime.now(UTC),
    )
    catalogue_pages = [page.number for page in pages if page.number != BY_ID]
    return load_batch(
        engine,
        run_id,
        account,
        frames,
        last_page=catalogue_pages[-1] if catalogue_pages else None,
        pages=sum(1 for page in pages if page.number != BY_ID and page.records),  # not the empty last one
        counters=meter.take(),
    )


def _read_and_load(
    engine: Engine,
    client: EmagClient,
    account: Account,
    run_id: int,
    pages: Generator[Page, None, None],
    options: SyncOptions,
    progress: ProgressReporter,
    meter: _Meter,
) -> RunRow:
    started, read_started_at = time.monotonic(), datetime.now(UTC)
    expected_pages = get_run(engine, run_id).expected_pages or 0
    pages_done, records_done = 0, 0
    try:
        stop_at_boundary(account, "before reading any page")
        with closing(pages):  # on a failure or a stop, drop the look-ahead reads at once
            for batch in batched(pages, options.pages_per_batch):
                counts = _load_pages(engine, account, run_id, batch, meter)
                pages_done, records_done = pages_done + len(batch), records_done + counts.read
                _logger().info(
                    "%s: %s committed: %s inserted, %s updated, %s unchanged, %s rejected",
                    account.title, page_ranges(page.number for page in batch),
                    counts.inserted, counts.updated, counts.unchanged, counts.rejected,
                )  # fmt: skip
                progress.report(pages_done, expected_pages, records_done)
                stop_at_boundary(account, f"after committing {page_ranges(page.number for page in batch)}")
        deactivated = _settle_missing(engine, client, account, run_id, options, meter)
        # Price updates whose process died before eMAG answered: this complete read shows what eMAG holds.
        reconcile_interrupted_from_database(engine, account, read_started_at, run_id=run_id)
        finish_run(
            engine,
            run_id,
            deactivated=deactivated,
            counters=meter.take(),
            elapsed_seconds=time.monotonic() - started,
        )
    except BaseException as exc:
        problem = database_error(exc, engine.url) if isinstance(exc, DBAPIError) else None
        error = str(problem) if problem is not None else f"{type(exc).__name__}: {exc}"
        status = RunStatus.INTERRUPTED if isinstance(exc, SyncInterruptedError) else RunStatus.FAILED
        elapsed = time.monotonic() - started
        fail_run(engine, run_id, error, elapsed_seconds=elapsed, counters=meter.take(), status=status)
        if isinstance(exc, IncompleteReadError):
            abandon_run(engine, run_id, error)  # resuming would read the same gap again
        raise
    progress.report(max(pages_done, expected_pages), expected_pages, records_done)
    return get_run(engine, run_id)


def _settle_missing(
    engine: Engine, client: EmagClient, account: Account, run_id: int, options: SyncOptions, meter: _Meter
) -> int:
    """Deactivate only what eMAG confirms is gone; returns how many products were deactivated.

    Offset paging has no snapshot: a record removed from a page already read shifts the rest up, so one
    live record slips past the reader, and the count can stay the same when another is added. So every
    active offer the read did not return is read again by its id (eMAG's product_offer/read filters by id,
    on the same rate budget): one eMAG still has under its part_number is loaded; one it does not have, or
    has under another part_number (the SKU was renamed: the new SKU's row carries the id), is deactivated.
    Refused before any such request: a read that could not have returned everything eMAG counted even if
    every missing offer were live, and more missing offers than both ``options.max_deactivated_share`` of
    the account's active catalogue and ``options.max_deactivated_count`` (an empty answer from eMAG must not
    wipe it; a small shop may still lose a few).
    """
    run = get_run(engine, run_id)
    missing = missing_from_read(engine, run_id, account)
    returned, expected = run.records_loaded + run.rows_rejected, run.expected_items or 0
    if returned + len(missing) < expected:
        raise IncompleteReadError(
            f"the read returned {returned} of the {expected} records eMAG counted at the start, and only "
            f"{len(missing)} offers known from earlier syncs are missing from it (a page ended early, or new "
            "records moved between pages during the read); nothing was deactivated and the run will not be "
            "resumed: start a new sync",
            account=account,
        )
    if not missing:
        return 0
    active = active_products(engine, account)
    # The share as it was typed, compared exactly: as a float, 0.29 x 100 offers is 28.999..., below 29.
    share = Decimal(str(options.max_deactivated_share))
    allowed = (
        DEFAULT_MAX_DEACTIVATED_COUNT
        if options.max_deactivated_count is None
        else options.max_deactivated_count
    )
    if len(missing) > share * active and len(missing) > allowed:
        raise DeactivationLimitError(
            f"eMAG did not return {len(missing)} of the account's {active} active offers "
            f"({len(missing) / active:.0%}; its count said {expected}), more than the {_percent(share)} or the "
            f"{allowed} offers one run may deactivate: nothing was deactivated. If they were really removed on "
            f"eMAG, run again with a higher limit (--max-deactivated-share 1 or --max-deactivated-count "
            f"{len(missing)}, or the flow options max_deactivated_share / max_deactivated_count)",
            account=account,
        )
    _logger().info(
        "%s: %s active offers were not in the read; reading each by id before deactivating any",
        account.title, len(missing),
    )  # fmt: skip
    answers = [(sku, client.read_by_id(emag_id)) for sku, emag_id in missing]
    found = [page for _, page in answers if page.records]
    renamed = [(sku, page) for sku, page in answers if page.records and _renamed(page.records[0], sku)]
    if found:
        # Loaded, or rejected by name: either way live (a renamed record under its new part_number).
        _load_pages(engine, account, run_id, found, meter)
        _logger().info(
            "%s: %s of them are live on eMAG (the paging had moved them past the read) and were loaded",
            account.title, len(found) - len(renamed),
        )  # fmt: skip
    if renamed:
        _logger().info(
            "%s: %s of them answer their id with another part_number (renamed on eMAG), so their rows are "
            "deactivated: %s",
            account.title, len(renamed),
            ", ".join(f"{sku} -> {page.records[0]['part_number']}" for sku, page in renamed[:10]),
        )  # fmt: skip
    gone = [sku for sku, page in answers if not page.records]
    return deactivate(engine, run_id, account, gone + [sku for sku, _ in renamed])


def _percent(share: Decimal) -> str:
    """``29%``, ``12.5%``: a share as typed, without float noise or rounding."""
    return f"{(share * 100).normalize():f}%"


def _renamed(record: object, sku: str) -> bool:
    """Whether the record eMAG holds under a row's id carries another part_number: a row stands for an id
    AND a part_number, so a renamed SKU's row is gone (its id now lives on in the new SKU's row).

    A record without a readable part_number proves nothing: its row stays as it is.
    """
    part_number = record.get("part_number") if isinstance(record, Mapping) else None
    try:
        return parse_sku(part_number) != sku
    except RecordRejected:
        return False


def sync_account_with_settings(
    account: Account, options: SyncOptions, flow_run_id: str | None, count: CatalogueCount | None
) -> RunRow:
    """``sync_account`` against the configured database and eMAG (engine and client opened here)."""
    settings = get_settings()
    if options.max_deactivated_count is None:  # the setting where the sync runs (a worker's environment)
        options = options.model_copy(update={"max_deactivated_count": settings.emag_max_deactivated_count})
    engine = make_engine(database_url(settings))
    try:
        with open_client(settings, account) as client:
            return sync_account(engine, client, account, options, flow_run_id=flow_run_id, count=count)
    except DBAPIError as exc:
        problem = database_error(exc, engine.url)  # a statement timeout or a refused write: not "went away"
        if problem is not None:
            problem.account = account
            raise problem from None
        if not isinstance(exc, OperationalError):
            raise
        # the server went away mid-run: expected, and the run can be resumed
        raise DatabaseUnavailableError(
            f"the database at {describe(engine.url)} went away during the sync ({first_line(exc)}); once it is "
            "back, `emag-sync runs` shows the run as crashed and `emag-sync sync --resume` (or Retry in the "
            "Prefect UI) continues it",
            account=account,
        ) from exc
    finally:
        engine.dispose()


def synced_as_completed(
    accounts: Sequence[Account],
    submit: Callable[[Account], PrefectFuture[RunRow]],
    limit: int | None = None,
) -> Iterator[tuple[Account, PrefectFuture[RunRow]]]:
    """Each account's finished sync future, as each finishes, with at most ``limit`` syncing at once
    (EMAG_SYNC_MAX_CONCURRENT_ACCOUNTS): the next account starts as one ends, in the order given."""
    from prefect.futures import as_completed

    limit = limit or get_settings().emag_sync_max_concurrent_accounts
    waiting = list(accounts)
    running: dict[PrefectFuture[RunRow], Account] = {}
    while waiting or running:
        while waiting and len(running) < limit:
            account = waiting.pop(0)
            running[submit(account)] = account
        finished = next(as_completed(list(running)))
        finished.wait()  # keeps the task's own final state: unwaited, .state asks the API, which may lag
        yield running.pop(finished), finished


@task(name="sync-account", task_run_name="sync-{account}", cache_policy=NO_CACHE, retries=0)
def sync_account_task(
    account: Account,
    options: SyncOptions,
    flow_run_id: str | None = None,
    count: CatalogueCount | None = None,
) -> RunRow:
    """Prefect task: one account's sync; Failed in one line on an expected failure.

    No task retries: transient API failures are retried by the client, and a rerun resumes instead.
    The engine and client are opened inside: they cannot be task inputs.
    """
    return run_step(sync_account_with_settings, account, options, flow_run_id, count, account=account)
