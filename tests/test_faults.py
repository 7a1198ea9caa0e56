"""Fault suite: each test injects one fault and proves nothing is lost or duplicated against the catalogue."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from decimal import Decimal, InvalidOperation
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, delete, func, make_url, select, text
from typer.testing import CliRunner

from emag_sandbox.server import RunningSandbox, serve
from emag_sandbox.state import Faults, SandboxState
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.api.client import EmagClient
from emag_sync.api.ratelimit import SlidingWindowLimiter
from emag_sync.cli import app
from emag_sync.errors import (
    DeactivationLimitError,
    EmagUnavailableError,
    IncompleteReadError,
    SyncLockedError,
)
from emag_sync.locks import LOCK_NAMESPACE
from emag_sync.options import SyncOptions
from emag_sync.run_row import RunRow
from emag_sync.schema import offers, products, sync_rejects, sync_runs
from emag_sync.settings import AccountConfig
from tasks.artifacts import ProgressReporter
from tasks.sync_account import sync_account
from tests.helpers import (
    OFFERS_UPSERT,
    assert_matches_catalogue,
    assert_offers_point_at_their_products,
    assert_resumed_after,
    before_statement,
    pages_in_order,
)
from tests.trickle import TricklingServer

FBE, MAIN = legacy_account(AccountType.FBE), legacy_account(AccountType.MAIN)
PAGE = 25  # records per page: FBE's 250 sandbox records are 10 full pages and an empty 11th


# --- building blocks ---------------------------------------------------------------------------------


def client_for(
    running: RunningSandbox,
    account: AccountType,
    *,
    transport: httpx.BaseTransport | None = None,
    look_ahead: int = 8,
    **config: object,
) -> EmagClient:
    """A client of the served sandbox with short backoff and no pacing (the sandbox's limit is off)."""
    username, password = running.state.credentials[str(account)]
    settings = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05, **config}
    account_config = AccountConfig(
        account=account, username=username, password=SecretStr(password), api_url=running.url, **settings
    )
    limiter = SlidingWindowLimiter(per_second=1000, per_minute=100_000)
    return EmagClient(account_config, transport=transport, limiter=limiter, look_ahead=look_ahead)


def run_sync(
    engine: Engine,
    running: RunningSandbox,
    account: AccountType = FBE,
    *,
    pages_per_batch: int = 2,
    resume: bool = False,
    wait_for_lock: bool = False,
    max_deactivated_share: float = SyncOptions().max_deactivated_share,
    max_deactivated_count: int | None = None,
    progress: ProgressReporter | None = None,
    **client_options: object,
) -> RunRow:
    """One account's sync through the plain function (no Prefect): the flow adds nothing to these faults."""
    options = SyncOptions(
        pages_per_batch=pages_per_batch,
        items_per_page=PAGE,
        resume=resume,
        wait_for_lock=wait_for_lock,
        max_deactivated_share=max_deactivated_share,
        max_deactivated_count=max_deactivated_count,
    )
    with client_for(running, account, **client_options) as client:
        return sync_account(engine, client, account, options, progress=progress)


class AfterBatch(ProgressReporter):
    """Calls ``action(pages_done)`` after each committed batch: a fault placed exactly between batches."""

    def __init__(self, account: AccountType, action: Callable[[int], None]) -> None:
        super().__init__(account)
        self.action = action

    def report(self, pages_done: int, pages_total: int, records_done: int) -> None:
        super().report(pages_done, pages_total, records_done)
        self.action(pages_done)


def runs(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(sync_runs).order_by(sync_runs.c.id)).mappings()]


def count(engine: Engine, table) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(table))


def pages_read(state: SandboxState, account: AccountType = FBE) -> list[int]:
    return sorted(
        r.page
        for r in state.request_log
        if r.account == str(account) and r.action == "read" and r.status_code == 200
    )


def written_once(engine: Engine) -> bool:
    """No offer row was written twice: a resumed read loaded nothing again."""
    with engine.connect() as conn:
        return conn.scalar(select(func.max(offers.c.sync_attempts))) == 1


def is_number(value: str) -> bool:
    try:
        return Decimal(value).is_finite()
    except InvalidOperation:
        return False


def failed_page(error: str) -> int:
    found = re.search(r"page (\d+)", error)
    assert found, f"the error names no page: {error}"
    return int(found.group(1))


def assert_failed_cleanly(engine: Engine, pages_per_batch: int) -> dict:
    """The run failed naming the account and page; only whole batches before that page are in the database."""
    [run] = runs(engine)
    assert run["status"] == "failed" and run["error"].startswith(
        "EmagUnavailableError: fbe: product_offer/read"
    )
    page = failed_page(run["error"])
    committed = run["last_committed_page"]
    assert committed % pages_per_batch == 0 and committed < page <= committed + 8  # look-ahead at most 8
    assert committed >= 2, "the fault came too early to prove committed batches stay"
    assert count(engine, products) == committed * PAGE == run["records_loaded"]
    assert_offers_point_at_their_products(engine)
    return run


def resume_and_check(engine: Engine, running: RunningSandbox, failed: dict, pages_per_batch: int) -> None:
    """The rerun continues the failed run after its last committed page, re-reads the pages before it
    (eMAG's paging has no snapshot) and completes it."""
    state = running.state
    state.request_log.clear()
    summary = run_sync(engine, running, pages_per_batch=pages_per_batch, resume=True)
    assert summary.resumed_count and summary.id == failed["id"] and summary.status == "succeeded"
    assert_resumed_after(pages_in_order(state, FBE), failed["last_committed_page"])
    assert_matches_catalogue(engine, state, FBE)
    assert_offers_point_at_their_products(engine)
    assert written_once(engine)
    [run] = runs(engine)
    assert run["records_loaded"] + run["rows_rejected"] == run["expected_items"] == 250


# --- eMAG's transient failures -------------------------------------------------------------------------


def test_429_storm_and_5xx_bursts_complete_with_every_retry_counted(engine, sandbox_server, sandbox_state):
    """Fault: FBE answers a storm of 10 HTTP 429s, then half its calls 500/502/504; MAIN the same
    without the 429s.

    Both complete with exactly the catalogue, and the run history counts every 429 and every retry.
    """
    sandbox_state.set_faults(FBE, Faults(force_429=10, error_rate=0.5))
    sandbox_state.set_faults(MAIN, Faults(error_rate=0.5))

    for account in (MAIN, FBE):
        summary = run_sync(engine, sandbox_server, account, max_attempts=15)
        assert summary.status == "succeeded"
        assert_matches_catalogue(engine, sandbox_state, account)
    assert_offers_point_at_their_products(engine)
    assert written_once(engine)

    for run in runs(engine):
        account = run["account"]
        answers = [r.status_code for r in sandbox_state.request_log if r.account == str(account)]
        refused = [status for status in answers if status != 200]
        assert sum(status >= 500 for status in refused) >= 2  # the fault really happened
        assert run["rate_limited"] == answers.count(429) == (10 if account == FBE.name else 0)
        assert run["retries"] == len(refused)
        assert run["api_requests"] == len(answers)


# --- eMAG going away mid-run ---------------------------------------------------------------------------


def test_emag_answering_only_errors_mid_run_fails_naming_the_page_then_resume_completes(
    engine, sandbox_server, sandbox_state
):
    """Fault: after 7 good requests eMAG answers every call 500/503 (``fail_from_request``) until it recovers.

    The run fails naming FBE and the page, keeps its committed batches and no half batch; the rerun resumes.
    """
    sandbox_state.set_faults(FBE, Faults(fail_from_request=7))  # count + pages 1-6
    with pytest.raises(EmagUnavailableError, match=r"fbe: product_offer/read page \d+: gave up after 3"):
        run_sync(engine, sandbox_server, pages_per_batch=2, look_ahead=1, max_attempts=3)
    failed = assert_failed_cleanly(engine, pages_per_batch=2)
    assert failed["last_committed_page"] == 6 and failed_page(failed["error"]) == 7

    sandbox_state.set_faults(FBE, Faults())
    resume_and_check(engine, sandbox_server, failed, pages_per_batch=2)


def test_sandbox_stopped_mid_run_fails_naming_the_page_then_resume_completes(engine, sandbox_state):
    """Fault: the eMAG server goes away (stopped: connection refused) after the second committed batch."""
    with ExitStack() as server:
        running = server.enter_context(serve(sandbox_state))

        def stop_after_two_batches(pages_done: int) -> None:
            if pages_done == 4:
                server.close()

        with pytest.raises(EmagUnavailableError, match=r"fbe: product_offer/read page \d+: gave up after"):
            run_sync(
                engine, running, pages_per_batch=2, look_ahead=2, max_attempts=3,
                progress=AfterBatch(FBE, stop_after_two_batches),
            )  # fmt: skip
    failed = assert_failed_cleanly(engine, pages_per_batch=2)
    assert "Connect" in failed["error"] or "Connection" in failed["error"]

    with serve(sandbox_state) as restarted:  # eMAG is back, on another port
        resume_and_check(engine, restarted, failed, pages_per_batch=2)


# --- the database connection killed inside a batch --------------------------------------------------------


def test_database_connection_killed_inside_a_batch_rolls_it_back_and_resume_completes(
    engine, database_url, sandbox_server, sandbox_state, monkeypatch
):
    """Fault: pg_terminate_backend kills the batch's connection after its products, before its offers.

    That batch is rolled back (no product without offer, run progress unchanged); the rerun completes.
    """
    admin = create_engine(database_url)
    in_transaction: list[int] = []

    def kill_own_connection(conn) -> None:
        in_transaction.append(conn.scalar(select(func.count()).select_from(products)))
        pid = conn.connection.driver_connection.info.backend_pid
        with admin.connect() as other:
            assert other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    batches: list[int] = []

    def kill_at_the_third_batch(conn) -> None:
        batches.append(len(batches) + 1)
        if len(batches) == 3:
            kill_own_connection(conn)

    with (
        before_statement(engine, OFFERS_UPSERT, kill_at_the_third_batch),
        pytest.raises(Exception, match="terminat|server closed the connection"),
    ):
        run_sync(engine, sandbox_server, pages_per_batch=2)
    admin.dispose()

    assert in_transaction == [6 * PAGE]  # the third batch's products were written, then rolled back
    [run] = runs(engine)
    assert run["status"] == "failed" and run["error"]
    assert (run["last_committed_page"], run["batches_committed"], run["records_loaded"]) == (4, 2, 4 * PAGE)
    assert count(engine, products) == count(engine, offers) == 4 * PAGE
    assert_offers_point_at_their_products(engine)

    resume_and_check(engine, sandbox_server, run, pages_per_batch=2)


# --- malformed records -------------------------------------------------------------------------------


class RewritingProxy(httpx.BaseTransport):
    """Real HTTP to the sandbox; chosen read pages have records replaced on the way back (hand-made faults)."""

    def __init__(self, edits: dict[int, Callable[[list], None]]) -> None:
        self._http = httpx.HTTPTransport()
        self._edits = edits

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._http.handle_request(request)
        if not request.url.path.endswith("/product_offer/read"):
            return response
        edit = self._edits.get(json.loads(request.content)["data"]["currentPage"])
        if edit is None or response.status_code != 200:
            return response
        body = json.loads(response.read())
        edit(body["results"])
        return httpx.Response(200, json=body)

    def close(self) -> None:
        self._http.close()


def test_malformed_records_of_every_kind_are_rejected_by_name_and_the_rest_loaded(
    engine, sandbox_server, sandbox_state, caplog
):
    """Fault: records without part_number, with an unparsable price, without id (the sandbox's
    malformed_rate), a record that is not an object, and a SKU repeated under another id (in the same
    batch and in a later batch). Each is rejected with a reason naming the field; every other record loads.
    """
    sandbox_state.set_faults(FBE, Faults(malformed_rate=0.08))
    served = sandbox_state.catalogue_records(FBE)  # malformed records come back the same on every read
    valid = [
        i for i, r in enumerate(served) if "id" in r and "part_number" in r and is_number(r["sale_price"])
    ]
    first, second, same_batch, later_batch, not_object = (
        valid[0], valid[1], next(i for i in valid if PAGE <= i < 2 * PAGE),
        next(i for i in valid if 2 * PAGE <= i < 3 * PAGE), next(i for i in valid[3:] if i < PAGE),
    )  # fmt: skip

    def page_1(records: list) -> None:
        records[not_object] = "not a record"

    def page_2(records: list) -> None:  # batch 1 (pages 1-2): the same SKU under another id
        records[same_batch - PAGE]["part_number"] = served[first]["part_number"]

    def page_3(records: list) -> None:  # batch 2: a SKU an earlier batch already loaded
        records[later_batch - 2 * PAGE]["part_number"] = served[second]["part_number"]

    proxy = RewritingProxy({1: page_1, 2: page_2, 3: page_3})
    summary = run_sync(engine, sandbox_server, pages_per_batch=2, transport=proxy)

    expected_reasons: dict[object, str] = {}
    for index, record in enumerate(served):
        if "part_number" not in record:
            expected_reasons[record["id"]] = "part_number is missing"
        elif "id" not in record:
            expected_reasons[record["part_number"]] = "id is missing"
        elif index not in valid:
            expected_reasons[record["id"]] = "sale_price is not a number: '12,5a'"
    assert {"part_number", "id", "sale_price"} <= {r.split()[0] for r in expected_reasons.values()}
    expected_reasons[None] = "record is not an object"
    expected_reasons[served[same_batch]["id"]] = (
        f"part_number '{served[first]['part_number']}' repeated with another id in this batch"
    )
    expected_reasons[served[later_batch]["id"]] = (
        f"part_number '{served[second]['part_number']}' already loaded in this run under id {served[second]['id']}"
    )
    with engine.connect() as conn:
        rejects = conn.execute(
            select(sync_rejects.c.emag_id, sync_rejects.c.sku, sync_rejects.c.reason)
        ).all()
    found = {(int(emag_id) if emag_id else sku): reason for emag_id, sku, reason in rejects}
    assert len(rejects) == len(found) == len(expected_reasons)
    for key, reason in expected_reasons.items():
        assert found[key].startswith(reason), (key, found[key])

    broken = {not_object, same_batch, later_batch}
    loaded = {served[i]["part_number"]: served[i]["id"] for i in valid if i not in broken}
    assert_matches_catalogue(engine, sandbox_state, FBE, expected=loaded)
    assert_offers_point_at_their_products(engine)
    [run] = runs(engine)
    assert summary.rows_rejected == run["rows_rejected"] == len(expected_reasons)
    # the data-quality completeness check's figures: loaded + rejected = eMAG's count
    assert run["records_loaded"] + run["rows_rejected"] == run["expected_items"] == len(served)
    # the log (the flow run's logs in the UI) names them too: one warning per transaction that had any
    warned = [
        r.getMessage() for r in caplog.records if "rejected, kept in app.emag_sync_rejects" in r.getMessage()
    ]
    assert all(r.levelname == "WARNING" for r in caplog.records if "rejected, kept in" in r.getMessage())
    assert sum(int(message.split(": ", 1)[1].split()[0]) for message in warned) == len(expected_reasons)
    assert any("no id, no SKU: record is not an object" in message for message in warned), warned
    assert any(f"id {served[same_batch]['id']}, SKU '{served[first]['part_number']}'" in m for m in warned)


# --- records PostgreSQL or Python cannot store, answers that never end -----------------------------------

# kind -> the start of its reject's reason; the other kinds (escaped_nul, big_integer, markup) load
HOSTILE_REASONS = {
    "nul": "description contains a NUL character (\\u0000), which PostgreSQL cannot store",
    "lone_surrogate": "characteristics[{last}].value contains a lone surrogate (\\ud800), which is not a Unicode",
    "big_id": "id out of range (1..4294967295): {id}",
    "long_part_number": "part_number is {bytes} bytes long; at most 1024 fit the catalogue's unique index",
    "deep": "characteristics is nested 50000 levels deep, more than Python's JSON parser reads",
    "long_number": "warranty cannot be read: Exceeds the limit (4300 digits) for integer string conversion",
    "nan": "best_offer_sale_price cannot be read: NaN is not a JSON number",
}


def test_hostile_records_are_named_rejects_and_everything_else_loads_on_every_run(
    engine, sandbox_server, sandbox_state
):
    """Fault: the sandbox serves one record of each hostile kind (``hostile_records=["all"]``): a NUL, an
    escaped backslash before u0000, a lone surrogate, integers beyond 64 bits (an id among them), a 3 kB
    part_number, 50,000 levels of nesting, a 5,000-digit number, NaN, markup in a SKU and a name.

    Each record PostgreSQL or Python cannot store is a reject naming its field, kept losslessly; every
    other record loads, raw JSON exactly as sent; the run succeeds, and so does the next one.
    """
    from emag_sandbox.hostile import MARKUP_PART_NUMBER, hostile_records

    clean = sandbox_state.catalogue_records(FBE)
    sandbox_state.set_faults(FBE, Faults(hostile_records=["all"]))
    kind_of = hostile_records(sandbox_state, FBE)
    record_of = {kind: record for record in clean if (kind := kind_of.get(record["id"]))}
    summary = run_sync(engine, sandbox_server, pages_per_batch=2)
    assert summary.status == "succeeded"

    with engine.connect() as conn:
        rejects = conn.execute(
            select(
                sync_rejects.c.emag_id, sync_rejects.c.sku, sync_rejects.c.reason, sync_rejects.c.raw_payload
            )
        ).all()
    reason_of = {kind_of[int(r.emag_id) % 2**64]: r for r in rejects}
    assert sorted(reason_of) == sorted(HOSTILE_REASONS)
    for kind, template in HOSTILE_REASONS.items():
        record = record_of[kind]
        expected = template.format(
            last=len(record["characteristics"]) - 1, id=record["id"] + 2**64,
            bytes=len(record["part_number"]) + 1 + 3000,
        )  # fmt: skip
        reject = reason_of[kind]
        assert reject.reason.startswith(expected), (kind, reject.reason)
        assert reject.emag_id == str(record["id"] + (2**64 if kind == "big_id" else 0))
        if kind != "long_part_number":
            assert reject.sku == record["part_number"]  # the reject names the offer eMAG still has
    # raw_payload keeps each record losslessly: as an object when JSONB holds it, else its JSON text
    assert json.loads(reason_of["nul"].raw_payload)["description"].endswith("\x00 after a NUL")
    assert (
        json.loads(reason_of["lone_surrogate"].raw_payload)["characteristics"][-1]["value"] == "16 GB \ud800"
    )
    assert reason_of["long_part_number"].raw_payload["part_number"].endswith("X" * 3000)
    assert reason_of["deep"].raw_payload.startswith(f'{{"id":{record_of["deep"]["id"]},')
    assert "[" * 50_000 + "]" * 50_000 in reason_of["deep"].raw_payload

    loaded = {r["part_number"]: r["id"] for r in clean if kind_of.get(r["id"]) not in HOSTILE_REASONS}
    loaded[MARKUP_PART_NUMBER] = loaded.pop(record_of["markup"]["part_number"])
    assert_matches_catalogue(engine, sandbox_state, FBE, expected=loaded)
    assert_offers_point_at_their_products(engine)
    raw = products.c.raw_emag_data
    columns = select(raw["description"].astext, raw["warranty"].astext, products.c.number_of_offers)
    with engine.connect() as conn:
        escaped = conn.execute(columns.where(products.c.emag_id == record_of["escaped_nul"]["id"])).one()
        big = conn.execute(columns.where(products.c.emag_id == record_of["big_integer"]["id"])).one()
    assert escaped[0] == "Path C:\\u0000 (a backslash, then u0000)"  # a backslash and "u0000", as sent
    assert big[1:] == (str(2**64 + 24), None)  # numeric in JSONB, NULL in an INTEGER column
    [run] = runs(engine)
    assert run["rows_rejected"] == len(HOSTILE_REASONS)
    assert run["records_loaded"] + run["rows_rejected"] == run["expected_items"] == 250

    again = run_sync(engine, sandbox_server, pages_per_batch=2)  # the same records, the same outcome
    assert again.status == "succeeded" and again.rows_rejected == len(HOSTILE_REASONS)
    assert again.rows_inserted == again.rows_updated == 0
    assert again.rows_unchanged == 250 - len(HOSTILE_REASONS)
    assert_matches_catalogue(engine, sandbox_state, FBE, expected=loaded)


@pytest.mark.timeout(60)  # unbounded, page 3 alone would take minutes per attempt
def test_a_trickling_page_fails_the_run_in_one_line_after_the_timeout_then_resume_completes(
    engine, sandbox_server, sandbox_state
):
    """Fault: a proxy in front of eMAG answers page 3 a byte every 50 ms, never pausing for the 1 s
    timeout of a read. Each attempt ends after 1 s; the run fails in one line naming the page, keeps the
    batch before it, and the rerun resumes once the answers flow again."""
    trickling = {"on": True}

    def page_3(line: str, body: bytes) -> bool:
        return (
            trickling["on"] and "product_offer/read" in line and json.loads(body)["data"]["currentPage"] == 3
        )

    with TricklingServer("body", upstream=sandbox_server.url, trickle=page_3) as proxy:
        through_proxy = RunningSandbox(sandbox_state, "127.0.0.1", proxy.port)
        started = time.monotonic()
        with pytest.raises(EmagUnavailableError) as info:
            run_sync(engine, through_proxy, look_ahead=1, max_attempts=2, timeout_seconds=1)
        elapsed = time.monotonic() - started
        assert str(info.value) == (
            "fbe: product_offer/read page 3: gave up after 2 attempts; last failure: ReadTimeout: no complete "
            "answer within 1 s (EMAG_TIMEOUT_SECONDS bounds a whole request, from connect to the last byte)"
        )
        assert "\n" not in str(info.value) and 2.0 <= elapsed < 15.0
        [run] = runs(engine)
        assert run["status"] == "failed" and run["last_committed_page"] == 2
        assert run["error"] == f"EmagUnavailableError: {info.value}"

        trickling["on"] = False
        resumed = run_sync(engine, through_proxy, resume=True, timeout_seconds=1)
    assert resumed.status == "succeeded" and resumed.id == run["id"]
    assert_matches_catalogue(engine, sandbox_state, FBE)
    assert written_once(engine)


@pytest.mark.timeout(60)
def test_a_trickling_count_ends_the_sync_command_in_one_line(
    engine, db_env, sandbox_env, prefect_harness, monkeypatch
):
    """Fault: eMAG's answer to the preflight count trickles in a byte every 50 ms: the command fails in
    one line after the timeout instead of hanging, and writes nothing."""
    with TricklingServer("headers") as server:
        monkeypatch.setenv("EMAG_API_URL", server.url + "/api-3")
        monkeypatch.setenv("EMAG_TIMEOUT_SECONDS", "1")
        monkeypatch.setenv("EMAG_MAX_ATTEMPTS", "2")
        started = time.monotonic()
        line = assert_one_line_error(invoke_sync("--account", "fbe"), "ReadTimeout", "within 1 s")
        assert time.monotonic() - started < 15  # two attempts of 1 s, not 100 s each
    assert "gave up after 2 attempts" in line
    assert_nothing_written(engine)


# --- two syncs of one account at once ------------------------------------------------------------------


def test_two_syncs_of_one_account_are_serialised_without_duplicates(engine, sandbox_server, sandbox_state):
    """Fault: a second FBE sync starts while the first holds the account (paused after its first batch).

    Without waiting it fails at once naming the account and writes nothing; a waiting one runs after the
    first has finished. Both complete, the database equals the catalogue, nothing was written twice.
    """
    first_batch_done, release = threading.Event(), threading.Event()

    def pause_after_first_batch(pages_done: int) -> None:
        if pages_done == 2:
            first_batch_done.set()
            assert release.wait(30)

    results: dict[str, RunRow | BaseException] = {}

    def in_thread(name: str, **options: object) -> threading.Thread:
        def target() -> None:
            try:
                results[name] = run_sync(engine, sandbox_server, **options)
            except BaseException as exc:  # reported by the assertions below
                results[name] = exc

        thread = threading.Thread(target=target, name=name)
        thread.start()
        return thread

    first = in_thread("first", progress=AfterBatch(FBE, pause_after_first_batch))
    assert first_batch_done.wait(30)

    started = time.monotonic()
    with pytest.raises(SyncLockedError, match="^fbe: another sync of this account is running"):
        run_sync(engine, sandbox_server)
    assert time.monotonic() - started < 2  # at once, not after the first one
    waiting = in_thread("waiting", wait_for_lock=True)
    time.sleep(0.3)
    assert waiting.is_alive() and len(runs(engine)) == 1  # it waits for the lock before writing anything

    release.set()
    first.join(30)
    waiting.join(30)
    assert isinstance(results["first"], RunRow), results["first"]
    assert isinstance(results["waiting"], RunRow), results["waiting"]
    assert results["first"].rows_inserted == 250 and results["waiting"].rows_inserted == 0
    assert [r["status"] for r in runs(engine)] == ["succeeded", "succeeded"]
    assert_matches_catalogue(engine, sandbox_state, FBE)
    assert_offers_point_at_their_products(engine)
    assert written_once(engine)


# --- bad configuration ---------------------------------------------------------------------------------


def invoke_sync(*args: str):
    """`emag-sync sync ARGS` in-process; an exception other than the exit is a traceback, not a message."""
    result = CliRunner().invoke(app, ["sync", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail("".join(traceback.format_exception(result.exception)))
    return result


def assert_one_line_error(result, *names: str) -> str:
    """Exit 1 with exactly one line on stderr that names every one of ``names``."""
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0]
    return lines[0]


def assert_nothing_written(engine: Engine) -> None:
    assert (count(engine, sync_runs), count(engine, products), count(engine, offers)) == (0, 0, 0)


def test_missing_credentials_one_line_naming_the_variable_nothing_written(
    engine, db_env, sandbox_env, monkeypatch
):
    """Fault: EMAG_FBE_PASSWORD is not set, and FBE alone is asked for: one line naming the variable,
    nothing written."""
    monkeypatch.delenv("EMAG_FBE_PASSWORD")
    line = assert_one_line_error(invoke_sync("--account", "fbe"), "EMAG_FBE_PASSWORD", "fbe")
    assert "EMAG_FBE_USERNAME" not in line and "main" not in line
    assert_nothing_written(engine)


def test_missing_credentials_of_one_account_leave_the_others_syncing(
    engine, db_env, sandbox_env, monkeypatch
):
    """Fault: EMAG_FBE_PASSWORD is not set and both accounts are asked for: FBE is left out with one line
    naming the variable, MAIN syncs, the command exits 1."""
    monkeypatch.delenv("EMAG_FBE_PASSWORD")
    result = invoke_sync("--account", "both")
    assert result.exit_code == 1
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("sync failed:")]
    assert "fbe: credentials missing, set EMAG_FBE_PASSWORD" in line and "EMAG_FBE_USERNAME" not in line
    assert [(run["account"], run["status"]) for run in runs(engine)] == [("main", "succeeded")]


@pytest.mark.parametrize("where", ["closed port", "no such database"])
def test_unreachable_database_one_line_naming_the_variable_without_its_password(
    where, database_url, sandbox_env, monkeypatch
):
    """Fault: EMAG_SYNC_DATABASE_URL points at a port where nothing listens, or at a database that is absent."""
    if where == "closed port":
        url = "postgresql://emag:db-secret-4417@127.0.0.1:9/emag"
    else:
        url = database_url.set(database="absent_db", password="db-secret-4417").render_as_string(
            hide_password=False
        )
    monkeypatch.setenv("EMAG_SYNC_DATABASE_URL", url)
    line = assert_one_line_error(invoke_sync("--account", "fbe"), "EMAG_SYNC_DATABASE_URL")
    assert "db-secret-4417" not in line


@pytest.mark.parametrize("where", ["closed port", "wrong path"])
def test_wrong_api_url_one_line_naming_the_url_nothing_written(
    where, engine, db_env, sandbox_env, monkeypatch
):
    """Fault: EMAG_API_URL points at a port where nothing listens, or at a path eMAG does not serve (404).

    The command's preflight sends one count per account, so this fails before any flow run or write.
    """
    url = "http://127.0.0.1:9/api-3" if where == "closed port" else sandbox_env.base_url + "/api-9"
    monkeypatch.setenv("EMAG_API_URL", url)
    monkeypatch.setenv("EMAG_MAX_ATTEMPTS", "2")  # the retries of a refused connection are not the point
    assert_one_line_error(invoke_sync("--account", "fbe"), url, "EMAG_API_URL")
    assert_nothing_written(engine)


# --- the sync process killed ---------------------------------------------------------------------------


def child_env(running: RunningSandbox, database_url, home: Path) -> dict[str, str]:
    """The environment of an `emag-sync` child: this session's Prefect server, database and sandbox."""
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        **running.env,
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # else the child starts its own server (10-20 s)
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "EMAG_SYNC_DATABASE_URL": database_url.render_as_string(hide_password=False),
        "EMAG_SYNC_HOME": str(home),
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def advisory_locks(engine: Engine) -> int:
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :namespace"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with engine.connect() as conn:
        return conn.scalar(query, {"namespace": LOCK_NAMESPACE})


@pytest.mark.flow
def test_sync_process_killed_with_sigkill_then_resume_equals_a_clean_run(
    prefect_harness, engine, database_url, db_env, tmp_path, monkeypatch
):
    """Fault: `emag-sync sync --account fbe` is killed with SIGKILL after committing some pages.

    Its run row stays 'running' and its advisory lock dies with it; `emag-sync sync --resume` continues that
    run after its last committed page, and the database equals a clean run's.
    """
    state = SandboxState(products=250, main_products=20, rate_limit=False)
    state.set_faults(FBE, Faults(latency_seconds=0.2))
    with serve(state) as running:
        command = [sys.executable, "-c", "from emag_sync.cli import app; app()", "sync", "--account", "fbe",
                   "--pages-per-batch", "1", "--items-per-page", "10"]  # fmt: skip
        log = (tmp_path / "child.log").open("w")
        child = subprocess.Popen(
            command, env=child_env(running, database_url, tmp_path / "home"), stdout=log, stderr=log
        )
        try:
            committed = lambda: any(r["last_committed_page"] >= 2 for r in runs(engine))  # noqa: E731
            wait_for(lambda: committed() or child.poll() is not None, 90, "two committed pages")
            assert child.poll() is None, (
                "the sync ended before it was killed:\n" + (tmp_path / "child.log").read_text()
            )
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            log.close()
        assert child.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()

        [killed] = runs(engine)
        assert killed["status"] == "running" and killed["resumed_count"] == 0
        assert 2 <= killed["last_committed_page"] < 25  # 250 records in pages of 10: killed mid-run
        assert count(engine, products) == count(engine, offers) == killed["records_loaded"]
        wait_for(lambda: advisory_locks(engine) == 0, 10, "the killed process's lock to go")

        state.set_faults(FBE, Faults())
        state.request_log.clear()
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("EMAG_REQUESTS_PER_SECOND", "200")  # the rerun need not be slow
        result = CliRunner().invoke(app, ["sync", "--account", "fbe", "--resume"])
        assert result.exit_code == 0, result.output

    [resumed] = runs(engine)
    assert (resumed["id"], resumed["status"], resumed["resumed_count"]) == (killed["id"], "succeeded", 1)
    assert_resumed_after(pages_in_order(state, FBE), killed["last_committed_page"])
    assert_matches_catalogue(engine, state, FBE)
    assert_offers_point_at_their_products(engine)
    assert written_once(engine)
    assert resumed["records_loaded"] + resumed["rows_rejected"] == resumed["expected_items"] == 250


@pytest.mark.flow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_sync_at_a_batch_boundary_and_resume_completes(
    prefect_harness, engine, database_url, db_env, tmp_path, monkeypatch, stop
):
    """Fault: Ctrl-C (SIGINT), or a worker being stopped (SIGTERM), reaches `emag-sync sync --account fbe`
    after it committed a few of its 25 pages (at eMAG's 3 requests/s).

    The command ends at the next batch boundary instead of reading every page: exit 128 + the signal, one
    line on stderr saying it was interrupted and that --resume continues; the run is 'interrupted' with its
    committed batches in the database; `sync --resume` completes it to exactly eMAG's catalogue.
    """
    state = SandboxState(products=250, main_products=20, rate_limit=False)
    state.set_faults(FBE, Faults(latency_seconds=0.2))
    with serve(state) as running:
        command = [sys.executable, "-c", "from emag_sync.cli import app; app()", "sync", "--account", "fbe",
                   "--pages-per-batch", "1", "--items-per-page", "10"]  # fmt: skip
        child = subprocess.Popen(
            command,
            env=child_env(running, database_url, tmp_path / "home"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            committed = lambda: any(r["last_committed_page"] >= 3 for r in runs(engine))  # noqa: E731
            wait_for(lambda: committed() or child.poll() is not None, 90, "three committed pages")
            assert child.poll() is None, "the sync ended before the signal:\n" + child.communicate()[1]
            child.send_signal(stop)
            signalled = time.monotonic()
            out, err = child.communicate(timeout=60)
            stopped_after = time.monotonic() - signalled
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 128 + stop, out + err
        [line] = err.strip().splitlines()
        assert line.startswith(f"sync interrupted by {stop.name}: fbe run "), line
        assert "marked interrupted" in line and "`emag-sync sync --resume` continues it" in line, line
        assert stopped_after < 15, stopped_after  # a batch boundary away, not the rest of the catalogue

        [interrupted] = runs(engine)
        assert interrupted["status"] == "interrupted" and interrupted["resumed_count"] == 0
        assert 3 <= interrupted["last_committed_page"] < 25, interrupted
        assert f"after page {interrupted['last_committed_page']}" in line
        assert count(engine, products) == count(engine, offers) == interrupted["records_loaded"]
        assert interrupted["records_loaded"] == 10 * interrupted["last_committed_page"]
        assert (
            max(pages_read(state)) < 25
        )  # the look-ahead was dropped: the catalogue was not read to its end

        state.set_faults(FBE, Faults())
        state.request_log.clear()
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("EMAG_REQUESTS_PER_SECOND", "200")  # the rerun need not be slow
        result = CliRunner().invoke(app, ["sync", "--account", "fbe", "--resume"])
        assert result.exit_code == 0, result.output

    [resumed] = runs(engine)
    assert (resumed["id"], resumed["status"], resumed["resumed_count"]) == (interrupted["id"], "succeeded", 1)
    assert_resumed_after(pages_in_order(state, FBE), interrupted["last_committed_page"])
    assert_matches_catalogue(engine, state, FBE)
    assert written_once(engine)


# --- credentials never shown ---------------------------------------------------------------------------

FBE_PASSWORD = "fbe-Pw-Zq81-never-shown"
MAIN_WRONG_PASSWORD = "main-Pw-Xk27-never-shown"


def secrets_of(running: RunningSandbox) -> list[str]:
    """The passwords and the Basic tokens they travel in."""
    username = running.state.credentials[FBE.name][0]
    main_username = running.state.credentials[MAIN.name][0]
    tokens = [
        base64.b64encode(f"{user}:{password}".encode()).decode()
        for user, password in ((username, FBE_PASSWORD), (main_username, MAIN_WRONG_PASSWORD))
    ]
    return [FBE_PASSWORD, MAIN_WRONG_PASSWORD, *tokens]


def assert_no_secret(where: str, content: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in content, f"a credential appears in {where}"


@pytest.mark.flow
def test_no_credential_in_logs_artifacts_errors_or_data_docs(
    prefect_harness, engine, db_env, tmp_path, monkeypatch, caplog
):
    """Fault: MAIN's password is refused by eMAG (HTTP 401) while FBE syncs with its own distinctive password.

    A full sync of both accounts with the right passwords, then one with MAIN's wrong password (refused by
    the preflight, nothing written). Neither password nor its Basic token appears in any log line (Python's
    and Prefect's, at DEBUG), artifact, the failed run's message, the run history, Data Docs or Prefect's
    own database.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

    from flows.sync import emag_product_sync

    state = SandboxState(products=120, main_products=60, rate_limit=False)
    state.credentials[FBE.name] = ("fbe-user-q81", FBE_PASSWORD)
    state.credentials[MAIN.name] = ("main-user-k27", "main-password-eMAG-knows")
    home = tmp_path / "home"
    with serve(state) as running:
        secrets = secrets_of(running)
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("EMAG_SYNC_HOME", str(home))
        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="emag_sync")  # the project logger has its own level (INFO)
        with temporary_settings(updates={"logging.to_api.enabled": True, "logging.level": "DEBUG"}):
            clean = emag_product_sync(accounts="both", return_state=True)
            monkeypatch.setenv("EMAG_MAIN_PASSWORD", MAIN_WRONG_PASSWORD)
            final = emag_product_sync(accounts="main", return_state=True)
            APILogWorker.drain_all(timeout=10)  # every log line is on the server before reading
    assert clean.is_completed() and final.is_failed()
    assert final.message.startswith("main: product_offer/count: eMAG refused the credentials (HTTP 401)")
    assert [r.status_code for r in state.request_log if r.account is None] == [401]  # refused, not retried
    assert_matches_catalogue(engine, state, FBE)

    flow_runs = [clean.state_details.flow_run_id, final.state_details.flow_run_id]
    with get_client(sync_client=True) as client:
        these_runs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_runs))
        logs: list = []
        while page := client.read_logs(log_filter=these_runs, offset=len(logs)):
            logs.extend(page)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_runs))
        )
    assert any("fbe: pages" in log.message for log in logs) and any("401" in log.message for log in logs)
    assert {a.key for a in artifacts} >= {"emag-sync-summary", "emag-dq-fbe"}

    assert_no_secret("the Python log", "\n".join(caplog.messages) + caplog.text, secrets)
    assert_no_secret("the Prefect log", "\n".join(log.message for log in logs), secrets)
    assert_no_secret("the artifacts", "\n".join(f"{a.data} {a.description}" for a in artifacts), secrets)
    assert_no_secret("the failed run's message", str(final.message), secrets)
    assert_no_secret("the run history", json.dumps(runs(engine), default=str), secrets)
    docs = [path for path in home.rglob("*") if path.is_file()]
    assert any(path.suffix == ".html" for path in docs)  # Data Docs were written
    for path in docs:
        assert_no_secret(str(path), path.read_bytes().decode("utf-8", "replace"), secrets)
    # Prefect's database (the session's server keeps it in PostgreSQL): every row of every table, as text.
    prefect_db = create_engine(
        make_url(PREFECT_API_DATABASE_CONNECTION_URL.value()).set(drivername="postgresql+psycopg")
    )
    with prefect_db.connect() as conn:
        tables = conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
        assert "artifact" in tables and "log" in tables
        for table in tables:
            rows = conn.scalars(text(f'SELECT t::text FROM public."{table}" t')).all()
            assert_no_secret(f"Prefect's table {table}", "\n".join(rows), secrets)
    prefect_db.dispose()


def test_a_read_that_ends_early_deactivates_nothing_and_the_next_run_reads_everything(
    engine, sandbox_server, sandbox_state
):
    """Fault: eMAG answers page 3 with an empty list (no isError) while it counted 250 records.

    Deactivation must not trust such a read: 200 of 250 active offers missing is far above the share one run
    may deactivate, so nothing is deactivated and the run fails saying so; the next sync keeps everything.
    Allowed to deactivate that many, the run reads each missing offer by id, finds them all live on eMAG,
    and loads them: still nothing deactivated. On a first sync (nothing known yet) the gap cannot be
    explained at all: the run is abandoned, and the next one reads everything.
    """
    run_sync(engine, sandbox_server)
    assert_matches_catalogue(engine, sandbox_state, FBE)

    def empty_page(records: list) -> None:
        records.clear()

    with pytest.raises(
        DeactivationLimitError, match=r"^fbe: eMAG did not return 200 of the account's 250 active"
    ):
        run_sync(engine, sandbox_server, transport=RewritingProxy({3: empty_page}))
    assert_matches_catalogue(engine, sandbox_state, FBE)  # nothing deactivated
    last = runs(engine)[-1]
    assert last["status"] == "failed" and "nothing was deactivated" in last["error"]

    sandbox_state.request_log.clear()
    healed = run_sync(
        engine, sandbox_server, transport=RewritingProxy({3: empty_page}), max_deactivated_share=1.0
    )
    assert healed.status == "succeeded" and healed.rows_deactivated == 0 and healed.records_loaded == 250
    by_id = [
        r
        for r in sandbox_state.request_log
        if r.action == "read" and r.page is None and r.account == FBE.name
    ]
    assert len(by_id) == 200  # each missing offer read by its id
    assert_matches_catalogue(engine, sandbox_state, FBE)

    with engine.begin() as conn:
        for table in (offers, products):
            conn.execute(delete(table))
    with pytest.raises(IncompleteReadError, match=r"fbe: the read returned 50 of the 250 records"):
        run_sync(engine, sandbox_server, transport=RewritingProxy({3: empty_page}))
    assert runs(engine)[-1]["status"] == "abandoned"
    summary = run_sync(engine, sandbox_server, resume=True)  # nothing to resume: a full read
    assert not summary.resumed_count and summary.rows_deactivated == 0
    assert_matches_catalogue(engine, sandbox_state, FBE)


@pytest.mark.flow
def test_the_deactivation_limit_given_on_the_command_line_is_the_one_applied(
    engine, db_env, sandbox_env, sandbox_state, prefect_harness
):
    """`sync --max-deactivated-share` reaches the run: with 0, five offers gone from eMAG are not
    deactivated and the command fails saying so; with the default (a larger share), they are."""
    assert invoke_sync("--account", "fbe").exit_code == 0
    sandbox_state.remove_records(FBE, 5)
    line = assert_one_line_error(invoke_sync("--account", "fbe", "--max-deactivated-share", "0"), "fbe")
    assert "one run may deactivate: nothing was deactivated" in line, line
    assert runs(engine)[-1]["rows_deactivated"] == 0
    assert invoke_sync("--account", "fbe").exit_code == 0
    assert runs(engine)[-1]["rows_deactivated"] == 5
    assert_matches_catalogue(engine, sandbox_state, FBE)


@pytest.mark.flow
def test_the_deactivation_count_from_the_environment_or_the_command_line_is_the_one_applied(
    engine, db_env, sandbox_env, sandbox_state, prefect_harness, monkeypatch
):
    """EMAG_MAX_DEACTIVATED_COUNT and `sync --max-deactivated-count` reach the run: with no share allowed,
    three offers gone are refused under the default allowance (2), deactivated with the setting at 3; and the
    command line's 1 wins over the setting."""
    assert invoke_sync("--account", "fbe").exit_code == 0
    sandbox_state.remove_records(FBE, 3)
    line = assert_one_line_error(invoke_sync("--account", "fbe", "--max-deactivated-share", "0"), "fbe")
    assert "more than the 0% or the 2 offers one run may deactivate: nothing was deactivated" in line, line

    monkeypatch.setenv("EMAG_MAX_DEACTIVATED_COUNT", "3")
    assert invoke_sync("--account", "fbe", "--max-deactivated-share", "0").exit_code == 0
    assert runs(engine)[-1]["rows_deactivated"] == 3

    sandbox_state.remove_records(FBE, 2)
    refused = invoke_sync("--account", "fbe", "--max-deactivated-share", "0", "--max-deactivated-count", "1")
    assert "or the 1 offers one run may deactivate" in assert_one_line_error(refused, "fbe")
    assert invoke_sync("--account", "fbe", "--max-deactivated-share", "0").exit_code == 0
    assert runs(engine)[-1]["rows_deactivated"] == 2
    assert_matches_catalogue(engine, sandbox_state, FBE)
