"""The data is true, or the run says it isn't: upstream changes during and between reads, empty answers,
whole accounts rejected, prices pushed during a sync. Each test states the fault; real sandbox, real
PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, select, update
from typer.testing import CliRunner

from emag_sandbox.state import Faults, SandboxState
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.cli import app
from emag_sync.errors import DeactivationLimitError, EmagFilterIgnoredError
from emag_sync.schema import offers, products
from expectations.checkpoint import run_checkpoint
from tests.helpers import (
    FilterIgnoringTransport,
    assert_matches_catalogue,
    assert_resumed_after,
    pages_in_order,
)
from tests.test_faults import PAGE, client_for, run_sync, runs

FBE, MAIN = legacy_account(AccountType.FBE), legacy_account(AccountType.MAIN)


def active(engine: Engine, table=offers) -> dict[str, int]:
    id_column = table.c.emag_offer_id if table is offers else table.c.emag_id
    query = select(table.c.sku, id_column).where(table.c.account == FBE.name, table.c.is_active)
    with engine.connect() as conn:
        return dict(conn.execute(query).all())


def live(state: SandboxState) -> dict[str, int]:
    return {r["part_number"]: r["id"] for r in state.catalogue_records(FBE)}


def test_a_live_offer_that_slips_past_the_read_stays_active(engine, sandbox_server, sandbox_state) -> None:
    """Fault: while the read runs, a record on a page already read is removed (the rest shift up by one, so
    the first record of the next page slips past the reader) and one is added at the end: the count is
    unchanged and every page full.

    The offer that slipped is read again by its id and stays active (and the new one is loaded); the
    removed one, read before it went, is confirmed gone by the next sync, which then equals eMAG exactly.
    """
    run_sync(engine, sandbox_server)
    before = live(sandbox_state)
    slipped = sandbox_state.catalogue_records(FBE)[2 * PAGE]  # first record of page 3
    sandbox_state.set_faults(FBE, Faults(mutate_after_page=2, mutate_remove=1, mutate_add=1))

    summary = run_sync(engine, sandbox_server)

    now = live(sandbox_state)
    [removed] = set(before) - set(now)
    [added] = set(now) - set(before)
    assert summary.status == "succeeded" and summary.rows_deactivated == 0
    assert slipped["part_number"] in active(engine)  # eMAG still returns it: never marked inactive
    assert active(engine) == active(engine, products) == {**now, removed: before[removed]}
    assert added in active(engine)

    sandbox_state.set_faults(FBE, Faults())
    again = run_sync(engine, sandbox_server)
    assert again.rows_deactivated == 1  # the removed record, confirmed gone by a read of its id
    assert_matches_catalogue(engine, sandbox_state, FBE)


def test_a_renamed_sku_is_deactivated_and_its_id_has_one_active_row(
    engine, sandbox_server, sandbox_state
) -> None:
    """Fault: between two syncs the seller renames a SKU on eMAG: same id, new part_number (A -> B).

    The next sync loads B; A's row, no longer returned, is read by its id, which answers B: the row stood for
    that id AND A, so it is deactivated (renamed), not kept active beside B with the same eMAG id.
    """
    run_sync(engine, sandbox_server)
    record = sandbox_state.catalogue_records(FBE)[60]
    [new_sku] = sandbox_state.rename_records(FBE, [record["id"]]).values()

    summary = run_sync(engine, sandbox_server)

    assert summary.status == "succeeded" and summary.rows_deactivated == 1
    assert record["part_number"] not in active(engine) and active(engine)[new_sku] == record["id"]
    assert_matches_catalogue(engine, sandbox_state, FBE)  # every eMAG id on exactly one active row


def test_emag_ignoring_the_id_filter_deactivates_no_live_offer(engine, sandbox_server, sandbox_state) -> None:
    """Fault: while the read runs, three records of pages already read are removed and three added at the end
    (the first three of page 7 slip past the reader, the count stays 250); and eMAG ignores the id filter of
    the reads that follow, answering each with the first page of the whole catalogue.

    The three live offers the listing skipped are not on that page: such an answer confirms nothing, so the
    run fails in one line naming the account and the filter and deactivates nothing. The next sync, with the
    filter honoured, deactivates exactly the three removed records.
    """
    run_sync(engine, sandbox_server)
    before = active(engine)
    slipped = [r["part_number"] for r in sandbox_state.catalogue_records(FBE)[6 * PAGE : 6 * PAGE + 3]]
    sandbox_state.set_faults(FBE, Faults(mutate_after_page=6, mutate_remove=3, mutate_add=3))

    with pytest.raises(EmagFilterIgnoredError) as failure:
        run_sync(engine, sandbox_server, transport=FilterIgnoringTransport())

    [line] = str(failure.value).splitlines()
    assert line.startswith("fbe: product_offer/read: offer id ") and ": filtered by id " in line, line
    assert runs(engine)[-1]["status"] == "failed" and runs(engine)[-1]["rows_deactivated"] == 0
    assert set(slipped) <= set(active(engine))
    assert set(before) <= set(active(engine)) == set(active(engine, products))  # nothing deactivated

    again = run_sync(engine, sandbox_server)
    assert again.status == "succeeded" and again.rows_deactivated == 3
    assert_matches_catalogue(engine, sandbox_state, FBE)


@pytest.mark.parametrize("where", ["inside the pages already committed", "at the end"])
def test_a_resumed_run_ends_exactly_where_a_clean_run_would(
    engine, sandbox_server, sandbox_state, where
) -> None:
    """Fault: a run fails after committing pages 1-4; while it is down, one record of pages 1-4 is removed
    and one added (inside those pages, or at the end: then a record shifts across the resume point).

    The resumed run reads pages 5.. and then 1-4 again, and ends with exactly eMAG's catalogue: the added
    SKU loaded, the removed one deactivated, nothing missing.
    """
    records = sandbox_state.catalogue_records(FBE)
    comes_back = records[7]["id"]  # page 1; unknown to the database until it "is added" below
    sandbox_state.remove_records(FBE, 0, ids=[comes_back])
    sandbox_state.set_faults(FBE, Faults(error_pages={5}))
    with pytest.raises(Exception, match="page 5"):
        run_sync(engine, sandbox_server, pages_per_batch=2)
    [failed] = runs(engine)
    assert failed["status"] == "failed" and failed["last_committed_page"] == 4

    sandbox_state.set_faults(FBE, Faults())
    removed = sandbox_state.remove_records(FBE, 0, ids=[records[30]["id"]])  # page 2, already committed
    if where == "at the end":
        sandbox_state.add_records(FBE, 1)
    else:
        sandbox_state.restore_records(FBE, [comes_back])
    sandbox_state.request_log.clear()

    summary = run_sync(engine, sandbox_server, pages_per_batch=2, resume=True)

    assert summary.status == "succeeded" and summary.resumed_count == 1 and summary.id == failed["id"]
    assert_resumed_after(pages_in_order(sandbox_state, FBE), 4)
    assert summary.rows_deactivated == len(removed) == 1
    assert_matches_catalogue(engine, sandbox_state, FBE)


def test_an_empty_answer_never_wipes_the_catalogue(engine, sandbox_server, sandbox_state) -> None:
    """Fault: eMAG answers count 0 and empty pages (an outage that looks like success).

    The run fails naming the counts and deactivates nothing; only an operator who says the offers are
    really gone (the share raised to 1) lets each be confirmed by id and deactivated.
    """
    run_sync(engine, sandbox_server)
    sandbox_state.set_faults(FBE, Faults(empty_catalogue=True))
    with pytest.raises(DeactivationLimitError) as failure:
        run_sync(engine, sandbox_server)
    assert str(failure.value).startswith(
        "fbe: eMAG did not return 250 of the account's 250 active offers (100%; its count said 0), more than "
        "the 10% or the 2 offers one run may deactivate: nothing was deactivated"
    )
    assert runs(engine)[-1]["status"] == "failed"
    assert_matches_catalogue(engine, sandbox_state, FBE, expected=dict(active(engine)))
    assert len(active(engine)) == 250

    allowed = run_sync(engine, sandbox_server, max_deactivated_share=1.0)
    assert allowed.status == "succeeded" and allowed.rows_deactivated == 250 and active(engine) == {}


def test_a_removal_at_the_share_cap_is_allowed_exactly(serve_sandbox, engine) -> None:
    """Fault: 30, then 29, of 100 offers removed on eMAG, with `--max-deactivated-share 0.29`.

    The share is compared exactly (as a float, 0.29 x 100 is 28.999...): 30 are refused naming the limit,
    and 29 are deactivated.
    """
    state = SandboxState(products=100, main_products=5, rate_limit=False)
    with serve_sandbox(state) as running:
        run_sync(engine, running)
        removed = state.remove_records(FBE, 30)
        with pytest.raises(DeactivationLimitError, match=r"\(30%; .* more than the 29% or the 2 offers"):
            run_sync(engine, running, max_deactivated_share=0.29)
        state.restore_records(FBE, removed[:1])

        summary = run_sync(engine, running, max_deactivated_share=0.29)

        assert summary.status == "succeeded" and summary.rows_deactivated == 29
        assert_matches_catalogue(engine, state, FBE)


def test_a_small_shop_may_lose_a_few_offers_under_the_absolute_allowance(serve_sandbox, engine) -> None:
    """Fault: a catalogue of 5 offers loses one (20%, above the default 10% share), later three of its four.

    One is within the default allowance of 2 offers and is deactivated without any option (0 refuses it);
    three are above both limits and refused, until the allowance says 3.
    """
    state = SandboxState(products=5, main_products=5, rate_limit=False)
    with serve_sandbox(state) as running:
        run_sync(engine, running)
        state.remove_records(FBE, 1)
        with pytest.raises(DeactivationLimitError, match=r"\(20%; .* more than the 10% or the 0 offers"):
            run_sync(engine, running, max_deactivated_count=0)
        assert run_sync(engine, running).rows_deactivated == 1

        state.remove_records(FBE, 3)
        with pytest.raises(
            DeactivationLimitError, match=r"did not return 3 of the account's 4 active offers"
        ):
            run_sync(engine, running)
        assert run_sync(engine, running, max_deactivated_count=3).rows_deactivated == 3
        assert_matches_catalogue(engine, state, FBE)


def test_a_run_that_loaded_nothing_fails_its_data_quality(
    engine, sandbox_server, sandbox_state, tmp_path
) -> None:
    """Fault: every record of the account is malformed, so all 250 are rejected (named, stored with the run).

    The run's read is complete, but its data-quality check fails on a critical expectation (loaded below
    90% of eMAG's count), not a mere warning; the offers loaded earlier stay active.
    """
    run_sync(engine, sandbox_server)
    sandbox_state.set_faults(FBE, Faults(malformed_rate=1.0))
    summary = run_sync(engine, sandbox_server)
    assert summary.status == "succeeded" and summary.rows_rejected == 250 and summary.records_loaded == 0

    url = engine.url.render_as_string(hide_password=False)
    result = run_checkpoint(url, FBE, run_id=summary.id, home=tmp_path)
    assert result.status == "failed"
    assert {row.name for row in result.critical_failures} == {"run_loaded_most_of_emag_count"}
    assert f"fbe: loaded only 0 of eMAG's 250 records, below 90%; 250 were rejected (run {summary.id}" in (
        result.message
    )


def test_a_price_pushed_while_a_sync_reads_is_not_reverted(engine, sandbox_server, sandbox_state) -> None:
    """Fault: while a sync reads, a price is pushed to eMAG and recorded in the database (confirmed after the
    sync's page holding that offer was read); then the sync loads that older page.

    The offer keeps the pushed price (eMAG holds it too); a later sync, whose page was read after the
    push, agrees with eMAG and rewrites the row from its data.
    """
    run_sync(engine, sandbox_server)
    target = sandbox_state.catalogue_records(FBE)[3]  # on page 1
    new_price = Decimal(target["min_sale_price"]) + Decimal("1.0100")

    def push() -> None:
        with client_for(sandbox_server, FBE) as pusher:  # the price update: eMAG first, then the database
            pusher.save_offers([{"id": target["id"], "sale_price": str(new_price)}])
        with engine.begin() as conn:
            conn.execute(
                update(offers)
                .where(offers.c.sku == target["part_number"], offers.c.account == FBE.name)
                .values(sale_price=new_price, price=new_price, prices_pushed_at=_now())
            )

    summary = run_sync(engine, sandbox_server, pages_per_batch=4, transport=AfterPage(2, push))

    assert summary.status == "succeeded"
    assert stored_price(engine, target["part_number"]) == new_price  # not the page's older price
    assert Decimal(sandbox_state.record_by_id(FBE, target["id"])["sale_price"]) == new_price
    run_sync(engine, sandbox_server)
    assert stored_price(engine, target["part_number"]) == new_price
    assert_matches_catalogue(engine, sandbox_state, FBE)


class AfterPage(httpx.BaseTransport):
    """Real HTTP to the sandbox; ``action()`` runs once when read page ``page`` has been answered, before the
    sync gets that page (so after the pages before it were read, and before their batch is loaded)."""

    def __init__(self, page: int, action: Callable[[], None]) -> None:
        self._http = httpx.HTTPTransport()
        self._page, self._action, self._done = page, action, False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._http.handle_request(request)
        body = json.loads(request.content)["data"]
        page = body.get("currentPage") if "id" not in body else None
        if not self._done and request.url.path.endswith("/read") and page == self._page:
            self._done = True
            response.read()
            self._action()
        return response

    def close(self) -> None:
        self._http.close()


def stored_price(engine: Engine, sku: str) -> Decimal:
    with engine.connect() as conn:
        return conn.scalar(
            select(offers.c.sale_price).where(offers.c.sku == sku, offers.c.account == FBE.name)
        )


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


# --- the account's lock, dead runs, the database going away ---------------------------------------------


@pytest.mark.flow
def test_a_second_sync_meets_the_lock_before_any_emag_request(
    prefect_harness, engine, db_env, sandbox_env, sandbox_state
) -> None:
    """Fault: `emag-sync sync` is started while another sync of FBE holds its lock.

    FBE is left out at once with one line saying another sync is running, having sent eMAG nothing for it
    (every lock is checked before any request), while MAIN syncs; with --wait-for-lock it sends nothing
    until the lock is free, then syncs.
    """
    from emag_sync.locks import account_lock

    with account_lock(engine, FBE):
        refused = CliRunner().invoke(app, ["sync"])
        assert refused.exit_code == 1
        [line] = [ln for ln in refused.stderr.strip().splitlines() if ln.startswith("sync failed:")]
        assert line.startswith("sync failed: fbe: another sync of this account is running (pid ")
        assert [r for r in sandbox_state.request_log if r.account == FBE.name] == []
        assert_matches_catalogue(engine, sandbox_state, MAIN)
        sandbox_state.request_log.clear()

        waiting = threading.Thread(
            target=lambda: results.append(
                CliRunner().invoke(app, ["sync", "--account", "fbe", "--wait-for-lock"])
            )
        )
        results: list = []
        waiting.start()
        time.sleep(3)
        assert [r for r in sandbox_state.request_log if r.account == FBE.name] == []  # waiting, not spending
    waiting.join(120)
    assert results and results[0].exit_code == 0, results[0].output if results else "still waiting"
    assert_matches_catalogue(engine, sandbox_state, FBE)


def test_a_run_whose_process_died_is_shown_as_crashed_then_resumed(
    engine, db_env, sandbox_env, sandbox_state
) -> None:
    """Fault: a sync's process died (SIGKILL, a crash, a lost database) and left its run 'running'.

    While a live sync holds the lock the run shows as running; once nobody holds it, `emag-sync runs`
    shows it as crashed (not running forever), and `sync --resume` continues that very run.
    """
    from emag_sync.locks import account_lock
    from emag_sync.runs import start_run

    run_id = start_run(
        engine,
        FBE,
        flow_run_id=None,
        items_per_page=100,
        pages_per_batch=5,
        expected_items=250,
        expected_pages=3,
    )
    with account_lock(engine, FBE):
        live_view = CliRunner().invoke(app, ["runs"])
    assert live_view.exit_code == 0 and runs(engine)[0]["status"] == "running"

    shown = CliRunner().invoke(app, ["runs"])
    assert shown.exit_code == 0, shown.output
    [run] = runs(engine)
    assert run["status"] == "crashed" and "stopped without finishing" in run["error"]
    assert "crashed" in shown.stdout

    summary = run_sync(engine, sandbox_env, resume=True)
    assert (summary.id, summary.status, summary.resumed_count) == (run_id, "succeeded", 1)
    assert_matches_catalogue(engine, sandbox_state, FBE)


def _hold_embedded_server(home: Path) -> tuple[subprocess.Popen[str], str]:
    """An embedded PostgreSQL of this test's own, kept up by a child process; its URL."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from emag_sync.db import embedded_server_url;"
            " print(embedded_server_url(Path(sys.argv[1])).render_as_string(hide_password=False), flush=True);"
            " time.sleep(600)",
            str(home),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    return child, child.stdout.readline().strip()


def _release_embedded_server(holder: subprocess.Popen[str], home: Path) -> None:
    """End the holder and stop its server (a terminated holder runs no atexit, so the server would stay)."""
    from emag_sync.db import stop_embedded

    holder.terminate()
    holder.wait(30)
    stop_embedded(home)


PREFECT_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| [A-Z]+ +\| ")


@pytest.mark.flow
def test_postgresql_dying_mid_run_is_one_line_and_resume_continues(
    prefect_harness, sandbox_env, sandbox_state, tmp_path, monkeypatch
) -> None:
    """Fault: the PostgreSQL server is shut down (immediate, as a crash) while a sync of FBE loads batches.

    The command ends with one line saying the database went away and that --resume continues, no
    traceback; once the server is back, `emag-sync runs` shows the run as crashed and `sync --resume`
    completes it to exactly eMAG's catalogue.
    """
    home = tmp_path / "pg"
    holder, url = _hold_embedded_server(home)
    try:
        monkeypatch.setenv("EMAG_SYNC_DATABASE_URL", url)
        monkeypatch.setenv("EMAG_SYNC_HOME", str(tmp_path / "home"))
        sandbox_state.set_faults(FBE, Faults(latency_seconds=0.2))

        def crash_after_a_few_pages() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len([r for r in sandbox_state.request_log if r.page]) < 4:
                time.sleep(0.02)
            pid = int((home / "pgdata" / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: every connection dies at once

        crasher = threading.Thread(target=crash_after_a_few_pages)
        crasher.start()
        result = CliRunner().invoke(app, ["sync", "--account", "fbe", "--items-per-page", "25"])
        crasher.join(60)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        # Prefect, imported by this session long before the command, prints warnings to the console (a real
        # command turns its console lines off before importing it), and this fresh database's schema is
        # created on the way (a note): the command's own output about the failure is one line.
        lines = [
            ln
            for ln in result.stderr.strip().splitlines()
            if not PREFECT_LOG_LINE.match(ln) and not ln.startswith("emag-sync: database: schema created")
        ]
        assert len(lines) == 1, result.stderr
        [line] = lines
        assert line.startswith("sync failed: fbe: the database at ") and "went away during the sync" in line
        assert "emag-sync sync --resume" in line
    finally:
        _release_embedded_server(holder, home)

    holder, url = _hold_embedded_server(home)  # the server is back (it recovers from the crash)
    try:
        sandbox_state.set_faults(FBE, Faults())
        shown = CliRunner().invoke(app, ["runs"])
        assert shown.exit_code == 0, shown.output
        assert "crashed" in shown.stdout
        resumed = CliRunner().invoke(app, ["sync", "--account", "fbe", "--resume", "--items-per-page", "25"])
        assert resumed.exit_code == 0, resumed.output
        db = create_engine(url)
        try:
            [run] = runs(db)
            assert (run["status"], run["resumed_count"]) == ("succeeded", 1)
            assert_matches_catalogue(db, sandbox_state, FBE)
        finally:
            db.dispose()
    finally:
        _release_embedded_server(holder, home)


def test_a_password_in_the_database_urls_query_string_is_never_printed(
    db_env, sandbox_env, monkeypatch
) -> None:
    """Fault: the database URL carries its password in the query string (`?password=...`, valid for psycopg).

    Neither a refused connection's error nor a working sync's output shows it.
    """
    secret = "Qx7-query-password"
    base = db_env.render_as_string(hide_password=False)
    wrong_database = base.replace(db_env.database, "no_such_database") + f"&password={secret}"
    monkeypatch.setenv("EMAG_SYNC_DATABASE_URL", wrong_database)
    refused = CliRunner().invoke(app, ["runs"])
    assert refused.exit_code == 1 and secret not in refused.output
    assert "password=***" in refused.stderr and "EMAG_SYNC_DATABASE_URL" in refused.stderr

    monkeypatch.setenv("EMAG_SYNC_DATABASE_URL", base + f"&password={secret}")
    listed = CliRunner().invoke(app, ["runs"])
    assert listed.exit_code == 0 and secret not in listed.output


def test_two_first_commands_at_once_on_a_fresh_embedded_database(tmp_path) -> None:
    """Fault: two emag-sync commands start together on an EMAG_SYNC_HOME whose embedded PostgreSQL and
    database do not exist yet (both try to create the database). Both succeed."""
    env = {k: v for k, v in os.environ.items() if k != "EMAG_SYNC_DATABASE_URL"}
    for attempt in range(3):
        env["EMAG_SYNC_HOME"] = str(tmp_path / f"home{attempt}")
        command = [sys.executable, "-c", "from emag_sync.cli import app; app()", "runs"]
        children = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_prefect_server_dying_mid_run_leaves_the_sync_at_emags_pace(
    serve_sandbox, database_url, tmp_path
) -> None:
    """Fault: the Prefect server (set up by `emag-sync setup-prefect`) is killed a few seconds into
    `emag-sync sync` at eMAG's 3 requests/s.

    The sync goes on at eMAG's pace (its budget is the database's, no request asks the dead API), succeeds,
    and says once that Prefect could not record the run; the command does not hang.
    """

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_LOGGING_TO_API_ENABLED="true",
        EMAG_SYNC_DATABASE_URL=database_url.render_as_string(hide_password=False),
        EMAG_SYNC_HOME=str(tmp_path / "home"),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        state = SandboxState(products=900, main_products=10, rate_limit=True)
        with serve_sandbox(state) as running:
            env.update(running.env)
            cli = [sys.executable, "-c", "from emag_sync.cli.main import run; run()"]
            setup = subprocess.run(
                [*cli, "setup-prefect", "--no-secrets"], env=env, capture_output=True, text=True
            )
            assert setup.returncode == 0, setup.stderr

            sync = subprocess.Popen(
                [*cli, "sync", "--account", "fbe", "--items-per-page", "25"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            while len([r for r in state.request_log if r.page]) < 5 and sync.poll() is None:
                time.sleep(0.05)
            killed_at = time.monotonic()
            os.killpg(server.pid, signal.SIGKILL)
            out, err = sync.communicate(timeout=240)
            finished_at = time.monotonic()
            reads = [r for r in state.request_log if r.account == FBE.name]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert sync.returncode == 0, err
    assert [r for r in reads if r.status_code == 429] == []
    assert "note: the Prefect API went away during the run" in err and "Traceback" not in err
    assert "succeeded" in out
    # 37 pages at 3/s: about 12 s; the remaining ~32 reads after the kill must not wait on the dead API.
    after = [r.at for r in reads if r.page]
    read_seconds = (after[-1] - after[0]).total_seconds()
    assert read_seconds < 1.5 * len(after) / 3, read_seconds
    assert finished_at - killed_at < 60
