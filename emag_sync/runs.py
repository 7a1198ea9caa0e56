"""Run history in app.emag_sync_runs, its one owner: a run's lifecycle (start, resume, each batch's
progress inside the batch's transaction, finish, fail, crash), its data-quality outcome and the reads of
it. What a row holds (statuses, counts, figures) is ``emag_sync.run_row``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from emag_sync.accounts import Account
from emag_sync.api.client import RequestCounters
from emag_sync.errors import ResumeError, RunStateError
from emag_sync.run_row import UNFINISHED, BatchCounts, DqStatus, RunRow, RunStatus
from emag_sync.schema import sync_rejects, sync_runs, sync_seen

log = logging.getLogger(__name__)

# Long tracebacks stay in the logs; the run row keeps enough to tell what happened.
MAX_ERROR_LENGTH = 4000
# fail_run tries once more on a fresh connection when the pooled one died with the failure it records.
FAIL_RUN_ATTEMPTS = 2


def _increments(counters: RequestCounters) -> dict[str, Any]:
    """Column updates adding a client's request counters to a run's totals (the names are the columns)."""
    c = sync_runs.c
    return {name: c[name] + getattr(counters, name) for name in ("api_requests", "rate_limited", "retries")}


def _one_run(conn: Connection, run_id: int) -> RunRow:
    row = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).one_or_none()
    if row is None:
        raise RunStateError(f"sync run {run_id} does not exist")
    return RunRow.from_row(row)


def get_run(engine: Engine, run_id: int) -> RunRow:
    """The run row, or RunStateError when there is none."""
    with engine.connect() as conn:
        return _one_run(conn, run_id)


def start_run(
    engine: Engine,
    account: Account,
    *,
    flow_run_id: str | None,
    items_per_page: int,
    pages_per_batch: int,
    expected_items: int | None,
    expected_pages: int | None,
) -> int:
    """A new running run for ``account``; returns its id."""
    with engine.begin() as conn:
        run_id: int = conn.execute(
            insert(sync_runs)
            .values(
                account_type=account.kind.value,
                account=account.name,
                flow_run_id=flow_run_id,
                status=RunStatus.RUNNING,
                items_per_page=items_per_page,
                pages_per_batch=pages_per_batch,
                expected_items=expected_items,
                expected_pages=expected_pages,
            )
            .returning(sync_runs.c.id)
        ).scalar_one()
    return run_id


def succeeded_in_flow_run(engine: Engine, account: Account, flow_run_id: str | None) -> int | None:
    """The run that already synced ``account`` completely in this Prefect flow run (a Retry skips it)."""
    if flow_run_id is None:
        return None
    query = (
        select(sync_runs.c.id)
        .where(sync_runs.c.account == account.name)
        .where(sync_runs.c.flow_run_id == flow_run_id)
        .where(sync_runs.c.status == RunStatus.SUCCEEDED)
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.scalar(query)


def latest_in_flow_run(engine: Engine, account: Account, flow_run_id: str) -> RunRow | None:
    """The account's latest run made by this Prefect flow run, whatever its status."""
    query = (
        select(sync_runs)
        .where(sync_runs.c.account == account.name, sync_runs.c.flow_run_id == flow_run_id)
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).one_or_none()
    return RunRow.from_row(row) if row is not None else None


def find_resumable_run(engine: Engine, account: Account, *, flow_run_id: str | None) -> RunRow | None:
    """The run a rerun should continue, or None.

    The latest run of ``account`` if it is running or failed and no later run of the account exists
    (a later run supersedes it). With ``flow_run_id`` (Prefect's Retry keeps the id) only that flow run's
    runs count; without (CLI ``--resume``) any. A succeeded run is never resumed. Call it under
    ``account_lock``: a "running" row is then a run whose process died.
    """
    later = sync_runs.alias("later")
    query = (
        select(sync_runs)
        .where(sync_runs.c.account == account.name, sync_runs.c.status.in_(UNFINISHED))
        .where(
            ~select(later.c.id)
            .where(later.c.account == sync_runs.c.account, later.c.id > sync_runs.c.id)
            .exists()
        )
        .order_by(sync_runs.c.id.desc())
        .limit(1)
    )
    if flow_run_id is not None:
        query = query.where(sync_runs.c.flow_run_id == flow_run_id)
    with engine.connect() as conn:
        row = conn.execute(query).one_or_none()
    return None if row is None else RunRow.from_row(row)


# What a run's read counted: a resumed attempt reads the whole catalogue again, so these start over; the
# requests, 429s, retries and duration of every attempt add up.
_READ_COUNTERS = (
    "pages_read",
    "batches_committed",
    "records_read",
    "records_loaded",
    "duplicates_skipped",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_rejected",
    "rows_deactivated",
)


def resume_run(engine: Engine, run_id: int, *, expected_items: int, expected_pages: int) -> RunRow:
    """Put an unfinished run back to running for a new attempt and return it.

    The attempt re-reads the whole catalogue (eMAG's paging has no snapshot: records removed or added while
    the run was down would otherwise be missed or kept), so its seen set, its rejects and the read's
    counters start over, against a fresh ``count``; resumed_count + 1, error cleared.
    """
    c = sync_runs.c
    with engine.begin() as conn:
        row = conn.execute(
            update(sync_runs)
            .where(c.id == run_id, c.status.in_(UNFINISHED))
            .values(
                status=RunStatus.RUNNING,
                resumed_count=c.resumed_count + 1,
                error=None,
                finished_at=None,
                expected_items=expected_items,
                expected_pages=expected_pages,
                **dict.fromkeys(_READ_COUNTERS, 0),
            )
            .returning(*sync_runs.columns)
        ).one_or_none()
        if row is not None:
            conn.execute(delete(sync_seen).where(sync_seen.c.run_id == run_id))
            conn.execute(delete(sync_rejects).where(sync_rejects.c.run_id == run_id))
        if row is None:
            current = _one_run(conn, run_id)
            raise ResumeError(
                f"{current.account}: sync run {run_id} is {current.status}; only a running or failed run can be "
                "resumed (start a new run instead)"
            )
    return RunRow.from_row(row)


def lock_running_run(conn: Connection, run_id: int, account: Account) -> None:
    """Inside a batch's transaction: the run must exist, be this account's and be running.

    Its row stays locked to the commit, so a batch never lands in a run that another process finished.
    """
    row = conn.execute(
        select(sync_runs.c.account, sync_runs.c.status).where(sync_runs.c.id == run_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise RunStateError(f"sync run {run_id} does not exist", account=account)
    if row.account != account.name or row.status != RunStatus.RUNNING:
        raise RunStateError(
            f"sync run {run_id} is a run of account {row.account} with status {row.status!r}; "
            "only a running run of this account can take batches",
            account=account,
        )


def record_batch(
    conn: Connection, run_id: int, counts: BatchCounts, counters: RequestCounters, *, last_page: int | None
) -> None:
    """Inside a batch's transaction: add the batch's counts and requests to the run's totals.

    ``last_page`` is the batch's last catalogue page (None for offers read by id: the resume point stays).
    """
    c = sync_runs.c
    conn.execute(
        update(sync_runs)
        .where(c.id == run_id)
        .values(
            last_committed_page=c.last_committed_page if last_page is None else last_page,
            pages_read=c.pages_read + counts.pages,
            batches_committed=c.batches_committed + 1,
            records_read=c.records_read + counts.read,
            records_loaded=c.records_loaded + counts.loaded,
            duplicates_skipped=c.duplicates_skipped + counts.duplicates,
            rows_inserted=c.rows_inserted + counts.inserted,
            rows_updated=c.rows_updated + counts.updated,
            rows_unchanged=c.rows_unchanged + counts.unchanged,
            rows_rejected=c.rows_rejected + counts.rejected,
            **_increments(counters),
        )
    )


def _add_elapsed(elapsed_seconds: float | None) -> Any:
    """duration_seconds accumulates the attempts of a run (a resumed run's downtime is not counted)."""
    if elapsed_seconds is None:
        return sync_runs.c.duration_seconds
    return func.coalesce(sync_runs.c.duration_seconds, 0) + round(Decimal(elapsed_seconds), 3)


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    deactivated: int,
    counters: RequestCounters = RequestCounters(),
    elapsed_seconds: float | None = None,
) -> RunRow:
    """Mark a running run succeeded and drop its seen set (records_loaded keeps its size).

    ``counters`` are increments since the last batch; ``elapsed_seconds`` is this attempt's working time,
    added to earlier attempts'. Without it the duration is the wall time since the run started.
    """
    c = sync_runs.c
    duration = (
        func.extract("epoch", func.now() - c.started_at)
        if elapsed_seconds is None
        else _add_elapsed(elapsed_seconds)
    )
    with engine.begin() as conn:
        row = conn.execute(
            update(sync_runs)
            .where(c.id == run_id, c.status == RunStatus.RUNNING)
            .values(
                status=RunStatus.SUCCEEDED,
                finished_at=func.now(),
                duration_seconds=duration,
                rows_deactivated=deactivated,
                **_increments(counters),
            )
            .returning(*sync_runs.columns)
        ).one_or_none()
        if row is None:
            current = _one_run(conn, run_id)
            raise RunStateError(f"{current.account}: sync run {run_id} is {current.status}, not running")
        conn.execute(delete(sync_seen).where(sync_seen.c.run_id == run_id))
    return RunRow.from_row(row)


def fail_run(
    engine: Engine,
    run_id: int,
    error: str,
    *,
    elapsed_seconds: float | None = None,
    counters: RequestCounters = RequestCounters(),
    status: RunStatus = RunStatus.FAILED,
) -> bool:
    """Record a failure (or, with ``status`` INTERRUPTED, the operator's stop); keeps the seen set so a rerun
    can resume. Returns whether it was recorded.

    Called while another error propagates, possibly a lost database: it uses a new connection and
    logs instead of raising, so the original error is the one the caller sees.
    """
    c = sync_runs.c
    statement = (
        update(sync_runs)
        .where(c.id == run_id, c.status == RunStatus.RUNNING)
        .values(
            status=status,
            finished_at=func.now(),
            error=error[:MAX_ERROR_LENGTH],
            duration_seconds=_add_elapsed(elapsed_seconds),
            **_increments(counters),
        )
    )
    for attempt in range(FAIL_RUN_ATTEMPTS):
        try:
            with engine.begin() as conn:
                return conn.execute(statement).rowcount == 1
        except DBAPIError as exc:
            # A pooled connection killed with the failure is invalidated here; the next one is new.
            if exc.connection_invalidated and attempt + 1 < FAIL_RUN_ATTEMPTS:
                continue
            log.warning("could not record the failure of sync run %s (it stays 'running'): %s", run_id, exc)
        except SQLAlchemyError as exc:
            log.warning("could not record the failure of sync run %s (it stays 'running'): %s", run_id, exc)
        break
    return False


def mark_crashed(engine: Engine, account: Account) -> list[int]:
    """The account's runs still 'running' are runs whose process died: mark them crashed (resumable).

    Call it only while no live sync of the account can be running: under the account's lock, or after
    ``emag_sync.locks.is_locked`` said nobody holds it (a dead process's lock dies with its connection).
    """
    c = sync_runs.c
    with engine.begin() as conn:
        ids: Sequence[int] = (
            conn.execute(
                update(sync_runs)
                .where(c.account == account.name, c.status == RunStatus.RUNNING)
                .values(
                    status=RunStatus.CRASHED,
                    finished_at=func.now(),
                    error="the process running this sync stopped without finishing it (killed, crashed, or its "
                    "database went away); `emag-sync sync --resume` or Retry in the Prefect UI continues it",
                )
                .returning(c.id)
            )
            .scalars()
            .all()
        )
    if ids:
        which = f"run {ids[0]} was" if len(ids) == 1 else f"runs {', '.join(map(str, ids))} were"
        log.warning("%s: %s left running by a process that died: marked crashed", account.title, which)
    return list(ids)


def abandon_unfinished(engine: Engine, account: Account, *, except_run_id: int) -> int:
    """A new (non-resume) run supersedes the account's unfinished runs: mark them abandoned."""
    c = sync_runs.c
    with engine.begin() as conn:
        ids: Sequence[int] = (
            conn.execute(
                update(sync_runs)
                .where(c.account == account.name, c.status.in_(UNFINISHED), c.id != except_run_id)
                .values(
                    status=RunStatus.ABANDONED,
                    finished_at=func.coalesce(c.finished_at, func.now()),
                    error=func.coalesce(c.error + "; ", "") + f"superseded by run {except_run_id}",
                )
                .returning(c.id)
            )
            .scalars()
            .all()
        )
        if ids:
            conn.execute(delete(sync_seen).where(sync_seen.c.run_id.in_(ids)))
    return len(ids)


def abandon_run(engine: Engine, run_id: int, error: str) -> None:
    """Close a run that must not be resumed (its read was incomplete): the next sync starts a full read."""
    c = sync_runs.c
    with engine.begin() as conn:
        conn.execute(
            update(sync_runs)
            .where(c.id == run_id)
            .values(
                status=RunStatus.ABANDONED,
                finished_at=func.coalesce(c.finished_at, func.now()),
                error=error[:MAX_ERROR_LENGTH],
            )
        )
        conn.execute(delete(sync_seen).where(sync_seen.c.run_id == run_id))


def recent_runs(engine: Engine, limit: int = 20, account: Account | str | None = None) -> list[RunRow]:
    """The latest runs, newest first (for ``emag-sync runs``)."""
    query = select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit)
    if account is not None:
        query = query.where(sync_runs.c.account == str(account))
    with engine.connect() as conn:
        return [RunRow.from_row(row) for row in conn.execute(query)]


def latest_run_id(engine: Engine) -> int:
    """The highest run id so far (0 on an empty history): what a caller's new runs come after."""
    with engine.connect() as conn:
        return conn.scalar(select(func.coalesce(func.max(sync_runs.c.id), 0))) or 0


def record_dq(engine: Engine, run_id: int, status: DqStatus, results: dict[str, Any]) -> None:
    """Store the data-quality outcome (passed, warning, failed) and its details on the run."""
    status = DqStatus(status)
    with engine.begin() as conn:
        done = conn.execute(
            update(sync_runs).where(sync_runs.c.id == run_id).values(dq_status=status, dq_results=results)
        )
        if done.rowcount != 1:
            raise RunStateError(f"sync run {run_id} does not exist")
