"""Sync run lifecycle in app.emag_sync_runs (start, resume, finish, fail) and the per-account lock."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from emag_sync.errors import ResumeError, RunStateError, SyncLockedError
from emag_sync.schema import sync_runs, sync_seen
from emag_sync.settings import AccountType

log = logging.getLogger(__name__)

RUNNING, SUCCEEDED, FAILED, ABANDONED = "running", "succeeded", "failed", "abandoned"
UNFINISHED = (RUNNING, FAILED)
DQ_STATUSES = ("passed", "warning", "failed")
# Long tracebacks stay in the logs; the run row keeps enough to tell what happened.
MAX_ERROR_LENGTH = 4000
# fail_run tries once more on a fresh connection when the pooled one died with the failure it records.
FAIL_RUN_ATTEMPTS = 2
# Advisory lock keys (two int4 form): a namespace for emag-sync, then one key per account.
LOCK_NAMESPACE = 0x656D6173  # "emas"
_LOCK_KEYS = {AccountType.MAIN: 1, AccountType.FBE: 2}


@dataclass(frozen=True)
class RunRow:
    """One row of app.emag_sync_runs (field names are the column names)."""

    id: int
    account_type: str
    flow_run_id: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: Decimal | None
    items_per_page: int
    pages_per_batch: int
    expected_items: int | None
    expected_pages: int | None
    last_committed_page: int
    batches_committed: int
    records_read: int
    records_loaded: int
    duplicates_skipped: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    rows_deactivated: int
    api_requests: int
    rate_limited: int
    retries: int
    resumed_count: int
    dq_status: str | None
    dq_results: dict[str, Any] | None
    error: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> RunRow:
        return cls(**row._mapping)


assert [f.name for f in fields(RunRow)] == [c.name for c in sync_runs.columns], "RunRow drifted from schema"


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
    account: AccountType,
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
                account_type=account.value,
                flow_run_id=flow_run_id,
                status=RUNNING,
                items_per_page=items_per_page,
                pages_per_batch=pages_per_batch,
                expected_items=expected_items,
                expected_pages=expected_pages,
            )
            .returning(sync_runs.c.id)
        ).scalar_one()
    return run_id


def find_resumable_run(engine: Engine, account: AccountType, *, flow_run_id: str | None) -> RunRow | None:
    """The run a rerun should continue, or None.

    The latest run of ``account`` if it is running or failed and no later run of the account exists
    (a later run supersedes it). With ``flow_run_id`` (Prefect's Retry keeps the id) only that flow run's
    runs count; without (CLI ``--resume``) any. A succeeded run is never resumed. Call it under
    ``account_lock``: a "running" row is then a run whose process died.
    """
    later = sync_runs.alias("later")
    query = (
        select(sync_runs)
        .where(sync_runs.c.account_type == account.value, sync_runs.c.status.in_(UNFINISHED))
        .where(
            ~select(later.c.id)
            .where(later.c.account_type == sync_runs.c.account_type, later.c.id > sync_runs.c.id)
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


def resume_run(engine: Engine, run_id: int) -> RunRow:
    """Put an unfinished run back to running (resumed_count + 1, error cleared) and return it."""
    c = sync_runs.c
    with engine.begin() as conn:
        row = conn.execute(
            update(sync_runs)
            .where(c.id == run_id, c.status.in_(UNFINISHED))
            .values(status=RUNNING, resumed_count=c.resumed_count + 1, error=None, finished_at=None)
            .returning(*sync_runs.columns)
        ).one_or_none()
        if row is None:
            current = _one_run(conn, run_id)
            raise ResumeError(
                f"{current.account_type.upper()}: sync run {run_id} is {current.status}; only a running or "
                "failed run can be resumed (start a new run instead)"
            )
    return RunRow.from_row(row)


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
    api_requests: int = 0,
    rate_limited: int = 0,
    retries: int = 0,
    elapsed_seconds: float | None = None,
) -> RunRow:
    """Mark a running run succeeded and drop its seen set (records_loaded keeps its size).

    Counters are increments since the last batch; ``elapsed_seconds`` is this attempt's working time,
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
            .where(c.id == run_id, c.status == RUNNING)
            .values(
                status=SUCCEEDED,
                finished_at=func.now(),
                duration_seconds=duration,
                rows_deactivated=deactivated,
                api_requests=c.api_requests + api_requests,
                rate_limited=c.rate_limited + rate_limited,
                retries=c.retries + retries,
            )
            .returning(*sync_runs.columns)
        ).one_or_none()
        if row is None:
            current = _one_run(conn, run_id)
            raise RunStateError(
                f"{current.account_type.upper()}: sync run {run_id} is {current.status}, not running"
            )
        conn.execute(delete(sync_seen).where(sync_seen.c.run_id == run_id))
    return RunRow.from_row(row)


def fail_run(
    engine: Engine,
    run_id: int,
    error: str,
    *,
    elapsed_seconds: float | None = None,
    api_requests: int = 0,
    rate_limited: int = 0,
    retries: int = 0,
) -> bool:
    """Record a failure; keeps the seen set so a rerun can resume. Returns whether it was recorded.

    Called while another error propagates, possibly a lost database: it uses a new connection and
    logs instead of raising, so the original error is the one the caller sees.
    """
    c = sync_runs.c
    statement = (
        update(sync_runs)
        .where(c.id == run_id, c.status == RUNNING)
        .values(
            status=FAILED,
            finished_at=func.now(),
            error=error[:MAX_ERROR_LENGTH],
            duration_seconds=_add_elapsed(elapsed_seconds),
            api_requests=c.api_requests + api_requests,
            rate_limited=c.rate_limited + rate_limited,
            retries=c.retries + retries,
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


def abandon_unfinished(engine: Engine, account: AccountType, *, except_run_id: int) -> int:
    """A new (non-resume) run supersedes the account's unfinished runs: mark them abandoned."""
    c = sync_runs.c
    with engine.begin() as conn:
        ids: Sequence[int] = (
            conn.execute(
                update(sync_runs)
                .where(c.account_type == account.value, c.status.in_(UNFINISHED), c.id != except_run_id)
                .values(
                    status=ABANDONED,
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
                status=ABANDONED,
                finished_at=func.coalesce(c.finished_at, func.now()),
                error=error[:MAX_ERROR_LENGTH],
            )
        )
        conn.execute(delete(sync_seen).where(sync_seen.c.run_id == run_id))


def recent_runs(engine: Engine, limit: int = 20, account: AccountType | None = None) -> list[RunRow]:
    """The latest runs, newest first (for ``emag-sync runs``)."""
    query = select(sync_runs).order_by(sync_runs.c.id.desc()).limit(limit)
    if account is not None:
        query = query.where(sync_runs.c.account_type == account.value)
    with engine.connect() as conn:
        return [RunRow.from_row(row) for row in conn.execute(query)]


def record_dq(engine: Engine, run_id: int, status: str, results: dict[str, Any]) -> None:
    """Store the data-quality outcome (passed, warning, failed) and its details on the run."""
    if status not in DQ_STATUSES:
        raise ValueError(f"data-quality status must be one of {', '.join(DQ_STATUSES)}, got {status!r}")
    with engine.begin() as conn:
        done = conn.execute(
            update(sync_runs).where(sync_runs.c.id == run_id).values(dq_status=status, dq_results=results)
        )
        if done.rowcount != 1:
            raise RunStateError(f"sync run {run_id} does not exist")


# --- the per-account lock ---------------------------------------------------------------------------

_HOLDER_SQL = text(
    """
SELECT a.pid, a.state_change, a.client_addr, a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = :namespace AND l.objid = :key AND l.objsubid = 2
"""
)


def _holder(conn: Connection, account: AccountType) -> str:
    """Who holds the account's lock, for the error message (best effort)."""
    try:
        row = conn.execute(_HOLDER_SQL, {"namespace": LOCK_NAMESPACE, "key": _LOCK_KEYS[account]}).first()
    except DBAPIError:
        return ""
    if row is None:
        return ""
    since = f" since {row.state_change:%Y-%m-%d %H:%M:%S %Z}" if row.state_change else ""
    return f" (pid {row.pid}{since})"


@contextmanager
def account_lock(engine: Engine, account: AccountType, *, wait: bool = False) -> Iterator[None]:
    """Hold the account's PostgreSQL advisory lock for the whole block, on a dedicated connection.

    A second sync of the same account waits (``wait=True``) or fails at once with SyncLockedError.
    The lock is session-level: released on exit, and by PostgreSQL when the process dies.
    """
    keys = {"namespace": LOCK_NAMESPACE, "key": _LOCK_KEYS[account]}
    conn = engine.connect()
    try:
        if wait:
            conn.execute(text("SELECT pg_advisory_lock(:namespace, :key)"), keys)
        elif not conn.execute(text("SELECT pg_try_advisory_lock(:namespace, :key)"), keys).scalar_one():
            holder = _holder(conn, account)
            raise SyncLockedError(
                f"{account.value}: another sync of this account is running{holder}; "
                "try again when it has finished"
            )
        conn.commit()  # session-level lock outlives the transaction; the connection stays idle, not in txn
    except BaseException:
        conn.close()
        raise
    try:
        yield
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"), keys)
            conn.commit()
        except SQLAlchemyError as exc:  # the connection is gone, and with it the lock
            log.warning(
                "%s: releasing the sync lock failed (%s); dropping its connection", account.label, exc
            )
            conn.invalidate()
        finally:
            conn.close()
