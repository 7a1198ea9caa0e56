"""Run lifecycle, resume lookup and the per-account advisory lock, against the embedded PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, func, select, text

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.api import RequestCounters
from emag_sync.errors import ResumeError, RunStateError, SyncLockedError
from emag_sync.locks import account_lock
from emag_sync.runs import (
    MAX_ERROR_LENGTH,
    abandon_unfinished,
    fail_run,
    find_resumable_run,
    finish_run,
    get_run,
    recent_runs,
    record_dq,
    resume_run,
    start_run,
)
from emag_sync.schema import sync_seen
from tasks.load import load_batch
from tasks.transform import transform_batch

MAIN, FBE = legacy_account(AccountType.MAIN), legacy_account(AccountType.FBE)


def new_run(engine, account=FBE, flow_run_id=None) -> int:
    return start_run(
        engine,
        account,
        flow_run_id=flow_run_id,
        items_per_page=100,
        pages_per_batch=5,
        expected_items=250,
        expected_pages=3,
    )


def load_page(engine, run_id, page, ids) -> None:
    records = [{"id": i, "part_number": f"SKU{i}", "sale_price": "1.0000"} for i in ids]
    frames = transform_batch(records, FBE, pages=page, synced_at=datetime.now(UTC))
    load_batch(engine, run_id, FBE, frames, last_page=page)


def seen_count(engine, run_id) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(sync_seen).where(sync_seen.c.run_id == run_id))


def test_fail_resume_finish(engine) -> None:
    run_id = new_run(engine, flow_run_id="flow-1")
    run = get_run(engine, run_id)
    assert (run.status, run.account_type, run.flow_run_id, run.expected_pages) == (
        "running",
        "fbe",
        "flow-1",
        3,
    )
    load_page(engine, run_id, 1, [1, 2])
    assert fail_run(engine, run_id, "EmagUnavailableError: page 2", elapsed_seconds=2.0) is True
    failed = get_run(engine, run_id)
    assert failed.status == "failed" and failed.error == "EmagUnavailableError: page 2"
    assert failed.finished_at is not None and failed.duration_seconds == Decimal("2.000")

    assert find_resumable_run(engine, FBE, flow_run_id=None).id == run_id  # CLI --resume
    assert find_resumable_run(engine, FBE, flow_run_id="flow-1").id == run_id  # Prefect's Retry
    assert find_resumable_run(engine, FBE, flow_run_id="flow-2") is None  # another flow run
    assert find_resumable_run(engine, MAIN, flow_run_id=None) is None

    resumed = resume_run(engine, run_id, expected_items=3, expected_pages=2)
    assert (resumed.status, resumed.resumed_count, resumed.error, resumed.finished_at) == (
        "running",
        1,
        None,
        None,
    )
    assert resumed.last_committed_page == 1  # the rerun starts after page 1...
    # ...and its read starts over (a fresh count, an empty seen set): the whole catalogue is read again.
    assert (
        resumed.expected_items,
        resumed.records_loaded,
        resumed.pages_read,
        seen_count(engine, run_id),
    ) == (
        3,
        0,
        0,
        0,
    )
    load_page(engine, run_id, 2, [2, 3])  # 2 was seen before the failure: this attempt loads it again
    load_page(engine, run_id, 1, [1])  # then the pages before the resume point, read again
    done = finish_run(
        engine, run_id, deactivated=4, counters=RequestCounters(api_requests=5), elapsed_seconds=1.5
    )
    assert (done.status, done.rows_deactivated, done.records_loaded, done.duplicates_skipped) == (
        "succeeded",
        4,
        3,
        0,
    )
    assert done.duration_seconds == Decimal("3.500") and done.api_requests == 5
    assert seen_count(engine, run_id) == 0  # cleaned, records_loaded kept
    assert find_resumable_run(engine, FBE, flow_run_id=None) is None  # succeeded: never resumed
    with pytest.raises(ResumeError, match="fbe: sync run .* is succeeded"):
        resume_run(engine, run_id, expected_items=3, expected_pages=2)
    with pytest.raises(RunStateError, match="is succeeded, not running"):
        finish_run(engine, run_id, deactivated=0)


def test_a_new_run_supersedes_unfinished_ones(engine) -> None:
    old = new_run(engine, flow_run_id="flow-1")
    load_page(engine, old, 1, [1])
    fail_run(engine, old, "boom")
    other_account = new_run(engine, MAIN)
    new = new_run(engine, flow_run_id="flow-2")
    assert find_resumable_run(engine, FBE, flow_run_id="flow-1") is None  # a later run exists
    assert abandon_unfinished(engine, FBE, except_run_id=new) == 1
    abandoned = get_run(engine, old)
    assert abandoned.status == "abandoned" and abandoned.error == f"boom; superseded by run {new}"
    assert seen_count(engine, old) == 0
    assert get_run(engine, other_account).status == "running"  # other account untouched
    assert find_resumable_run(engine, FBE, flow_run_id=None).id == new
    assert find_resumable_run(engine, MAIN, flow_run_id=None).id == other_account


def test_fail_run_never_raises_and_truncates(engine) -> None:
    run_id = new_run(engine)
    assert fail_run(engine, run_id, "x" * (MAX_ERROR_LENGTH + 100)) is True
    assert len(get_run(engine, run_id).error) == MAX_ERROR_LENGTH
    assert fail_run(engine, run_id, "again") is False  # no longer running: not overwritten
    dead = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    try:
        assert fail_run(dead, run_id, "database went away") is False
    finally:
        dead.dispose()


def test_fail_run_records_after_the_database_dropped_its_connection(engine, database_url) -> None:
    run_id = new_run(engine)
    flow_engine = create_engine(database_url, pool_size=1, max_overflow=0)  # no pre-ping: a stale conn
    try:
        with flow_engine.connect() as conn:
            pid = conn.scalar(text("SELECT pg_backend_pid()"))
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.2)
        assert fail_run(flow_engine, run_id, "OperationalError: server closed the connection") is True
    finally:
        flow_engine.dispose()
    assert get_run(engine, run_id).status == "failed"


def test_recent_runs_and_dq(engine) -> None:
    ids = [new_run(engine, account) for account in (FBE, MAIN, FBE)]
    assert [r.id for r in recent_runs(engine)] == ids[::-1]
    assert [r.id for r in recent_runs(engine, limit=1)] == [ids[2]]
    assert [r.id for r in recent_runs(engine, account=MAIN)] == [ids[1]]
    record_dq(engine, ids[0], "warning", {"completeness": {"expected": 250, "loaded": 249}})
    run = get_run(engine, ids[0])
    assert run.dq_status == "warning" and run.dq_results["completeness"]["loaded"] == 249
    with pytest.raises(ValueError, match="'ok' is not a valid DqStatus"):
        record_dq(engine, ids[0], "ok", {})
    with pytest.raises(RunStateError, match="999 does not exist"):
        record_dq(engine, 999, "passed", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = "failed"


def test_second_sync_of_an_account_fails_at_once_naming_it(engine) -> None:
    with account_lock(engine, FBE):
        busy = r"^fbe: another sync of this account is running \(pid \d+ since .*\); try again"
        with pytest.raises(SyncLockedError, match=busy), account_lock(engine, FBE):
            pass
        with account_lock(engine, MAIN):  # the other account is not blocked
            pass
    with account_lock(engine, FBE):  # released on exit
        pass


def test_waiting_lock_is_granted_when_the_holder_leaves(engine) -> None:
    acquired = threading.Event()

    def second() -> None:
        with account_lock(engine, FBE, wait=True):
            acquired.set()

    with account_lock(engine, FBE):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.3)
        assert not acquired.is_set()
    waiter.join(timeout=10)
    assert acquired.is_set()


def test_lock_dies_with_its_connection(engine) -> None:
    with account_lock(engine, FBE):
        with engine.connect() as conn:
            holder = conn.scalar(
                text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = 2")
            )
            assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": holder})
        time.sleep(0.2)
        with account_lock(engine, FBE):  # the dead holder's lock is gone
            pass
    # leaving the first block after its connection died does not raise
