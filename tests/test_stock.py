"""Stock updates for MAIN offers as the operator relies on them: sent through the price updates' one
machinery (intent, eMAG's answer, the re-read, reconcile), 50 light offer/save entities per request at
the account's pace, FBE refused before any request, the mass-zero guard, a sync that never reverts a push.
Real sandbox over HTTP, real PostgreSQL, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert, update
from typer.testing import CliRunner

from emag_sandbox.state import Faults, RequestRefused, SandboxState
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.cli import app
from emag_sync.errors import ConfigError, MassZeroStockError, StockUpdateError
from emag_sync.prices import apply
from emag_sync.prices.csv_input import parse_stock_csv
from emag_sync.prices.reconcile import reconcile_interrupted_from_database
from emag_sync.prices.stock import check_mass_zero, make_stock_request, parse_stock
from emag_sync.schema import price_updates, sync_runs
from emag_sync.settings import get_settings
from tasks.load import load_batch
from tasks.transform import transform_batch
from tests.price_helpers import REGISTERED, TESTER, audit_rows, offer_row, saves_sent, sync_account_once

MAIN, FBE = legacy_account(AccountType.MAIN), legacy_account(AccountType.FBE)
FBE_REFUSAL = "FBE stock is managed by eMAG's warehouse"


@pytest.fixture
def sandbox_state() -> SandboxState:
    """MAIN 200 records, FBE 60, rate limit off."""
    return SandboxState(products=60, main_products=200, rate_limit=False)


@pytest.fixture
def sandbox(sandbox_env):
    return sandbox_env


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    from emag_sync.cli.console import console

    monkeypatch.setattr(console, "width", 400)


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def published(state: SandboxState, n: int) -> list[dict]:
    """n MAIN records eMAG sells (status 1), in catalogue order."""
    records = [r for r in state.catalogue_records(MAIN) if r["status"] == 1]
    assert len(records) >= n, "not enough published MAIN offers in the sandbox"
    return records[:n]


def stock_audits(engine) -> list[dict]:
    return [a for a in audit_rows(engine) if a["kind"] == "stock"]


def age_intents(engine, seconds: float = 60) -> None:
    """The killed run died a while ago (past the settle time a save may still be in flight)."""
    with engine.begin() as conn:
        conn.execute(
            update(price_updates)
            .where(price_updates.c.status == "sending")
            .values(sent_at=price_updates.c.sent_at - timedelta(seconds=seconds))
        )


def run_single(engine, sku: str, account: str, stock, warehouse_id=None, **kwargs):
    request = make_stock_request(sku, account, stock, warehouse_id, accounts=REGISTERED)
    with apply.emag_writers(get_settings()) as writer_for:
        return apply.run_stock_single(engine, request, writer_for, TESTER, **kwargs)


# --------------------------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("65536", "stock 65536 is outside 0..65535"),
        ("-1", "stock -1 is outside 0..65535"),
        ("4.5", "stock '4.5' is not a whole number"),
        ("1e3", "stock '1e3' is not a whole number"),
        ("١٢", "is not a whole number"),  # Arabic-Indic digits: int() would take them, eMAG would not
        ("", "is not a whole number"),
        (2.0, "must be a whole number 0..65535, got 2.0"),
        (True, "must be a whole number"),
    ],
)
def test_a_stock_is_a_whole_number_0_to_65535(value, expected):
    with pytest.raises(StockUpdateError, match=expected):
        parse_stock(value, where="EMG1 on eMAG MAIN")


def test_bounds_and_text_are_taken():
    assert [parse_stock(v, where="x") for v in ("0", " 65535 ", 12)] == [0, 65535, 12]
    request = make_stock_request(" EMG1 ", "MAIN", "7", "", accounts=REGISTERED)
    assert (request.sku, request.account, request.stock, request.warehouse_id) == ("EMG1", MAIN, 7, None)
    with pytest.raises(StockUpdateError, match="warehouse_id must be 1 or more"):
        make_stock_request("EMG1", "main", "7", "0", accounts=REGISTERED)


def test_the_stock_csv_reports_every_bad_line_by_number_like_the_price_csv():
    text = (
        "SKU,Account,Stock,Warehouse_ID\n"
        "EMG1,main,5\n"
        "EMG2,main,x\n"
        "EMG3,nope,1\n"
        'EMG4,main,"3\n'
        "EMG5,main,1,2,9\n"
        "EMG1,main,6\n"
        "EMG6,fbe,2,\n"
    )
    parsed = parse_stock_csv(text, accounts=REGISTERED)
    assert [(r.sku, r.stock, r.line) for r in parsed.requests] == [("EMG6", 2, 8)]
    assert [(p.line, p.sku) for p in parsed.problems] == [
        (2, "EMG1"), (3, "EMG2"), (4, "EMG3"), (5, ""), (6, "EMG5"), (7, "EMG1"),
    ]  # fmt: skip
    messages = {p.line: p.message for p in parsed.problems}
    assert messages[3] == "stock 'x' is not a whole number (0..65535)"
    assert messages[4].startswith("account 'nope' is not registered")
    assert messages[2] == "listed on lines 2, 7; keep one line per SKU and account"
    header = parse_stock_csv("sku,account,price\n", accounts=REGISTERED).problems[0].message
    assert header == (
        "header: missing column(s) stock; unknown column(s) price; expected sku,account,stock[,warehouse_id]"
    )


# --------------------------------------------------------------------------------------------- the sandbox


def test_the_sandbox_takes_stock_through_offer_save_as_emag_validates_it(sandbox_state):
    state = sandbox_state
    record = published(state, 1)[0]
    for bad in (70000, -1, 2.5, None, True):
        with pytest.raises(RequestRefused, match="stock must be a list of"):
            state.save(
                MAIN, "offer", "save", [{"id": record["id"], "stock": [{"warehouse_id": 1, "value": bad}]}]
            )
    with pytest.raises(RequestRefused, match="stock must be a list of"):
        state.save(MAIN, "offer", "save", [{"id": record["id"], "stock": [{"warehouse_id": 0, "value": 1}]}])
    fbe = state.catalogue_records(FBE)[0]
    with pytest.raises(RequestRefused, match="Fulfilled by eMAG offer is managed by eMAG"):
        state.save(FBE, "offer", "save", [{"id": fbe["id"], "stock": [{"warehouse_id": 1, "value": 1}]}])

    reserved = record["general_stock"] - record["estimated_stock"]
    state.save(MAIN, "offer", "save", [{"id": record["id"], "stock": [{"warehouse_id": 2, "value": 30}]}])
    state.save(MAIN, "offer", "save", [{"id": record["id"], "stock": [{"warehouse_id": 1, "value": 12}]}])
    now = state.record_by_id(MAIN, record["id"])
    assert now is not None
    assert now["stock"] == [{"warehouse_id": 1, "value": 12}, {"warehouse_id": 2, "value": 30}]
    assert (now["general_stock"], now["estimated_stock"]) == (42, max(0, 42 - reserved))
    assert now["sale_price"] == record["sale_price"]  # a light save changes only what it names


# --------------------------------------------------------------------------------------------- single


def test_one_stock_is_applied_audited_and_re_read(sandbox, engine, db_env):
    state = sandbox.state
    sync_account_once(engine, state, MAIN)
    record = published(state, 1)[0]
    sku = record["part_number"]
    new = record["general_stock"] + 5

    result = cli("update-stock", "--sku", sku, "--account", "main", "--stock", str(new))

    assert result.exit_code == 0, result.output
    old = record["general_stock"]
    assert f"{sku} on eMAG MAIN: stock {old} -> {new} (warehouse 1): applied on eMAG and in the database" in (
        result.stdout
    )
    assert len(saves_sent(state, MAIN)) == 1
    assert [s.entity for s in state.saves] == [
        {"id": record["id"], "stock": [{"warehouse_id": 1, "value": new}]}
    ]
    [audit] = stock_audits(engine)
    assert (audit["status"], audit["emag_answer"], audit["reread_found"], audit["reread_source"]) == (
        "applied", "accepted", "new stock", "save",
    )  # fmt: skip
    assert (audit["old_stock"], audit["new_stock"], audit["reread_stock"], audit["warehouse_id"]) == (
        old, new, new, 1,
    )  # fmt: skip
    assert audit["sent_entity"] == {"id": record["id"], "stock": [{"warehouse_id": 1, "value": new}]}
    held = state.record_by_id(MAIN, record["id"])
    row = offer_row(engine, sku, MAIN)
    assert (row["stock"], row["available_stock"]) == (held["general_stock"], held["estimated_stock"])
    assert row["stock_pushed_at"] == audit["reread_at"] and row["prices_pushed_at"] is None

    shown = cli("offer-history", "--kind", "stock")
    assert f"stock {old} -> {new} (warehouse 1)" in shown.stdout and "new stock (save," in shown.stdout
    alias = cli("price-history", "--format", "json")
    [listed] = json.loads(alias.stdout)
    assert listed["kind"] == "stock" and listed["old"] == {"stock": old} and listed["new"] == {"stock": new}
    assert json.loads(cli("offer-history", "--kind", "price", "--format", "json").stdout) == []


def test_fbe_is_refused_in_the_operators_terms_before_any_request(sandbox, engine, db_env):
    state = sandbox.state
    sync_account_once(engine, state, FBE)
    sku = state.catalogue_records(FBE)[0]["part_number"]

    result = cli("update-stock", "--sku", sku, "--account", "fbe", "--stock", "3")

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"emag-sync: fbe: {sku}: {FBE_REFUSAL} (account fbe is FBE; stock is sent only for main accounts)"
    )
    assert state.request_log == [] and audit_rows(engine) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--stock", "70000"), "emag-sync: {sku} on eMAG MAIN: stock 70000 is outside 0..65535"),
        (("--stock", "2.5"), "emag-sync: {sku} on eMAG MAIN: stock '2.5' is not a whole number (0..65535)"),
        (("--stock", "1", "--warehouse-id", "3"), "warehouse_id 3 is not one of the offer's warehouses (1)"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_sent(sandbox, engine, db_env, args, expected):
    state = sandbox.state
    sync_account_once(engine, state, MAIN)
    sku = published(state, 1)[0]["part_number"]
    result = cli("update-stock", "--sku", sku, "--account", "main", *args)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert expected.format(sku=sku) in result.stderr
    assert saves_sent(state) == [] and audit_rows(engine) == []


def test_an_offer_in_several_warehouses_needs_the_warehouse_named(sandbox, engine):
    state = sandbox.state
    record = published(state, 1)[0]
    state.save(MAIN, "offer", "save", [{"id": record["id"], "stock": [{"warehouse_id": 2, "value": 8}]}])
    sync_account_once(engine, state, MAIN)
    sku = record["part_number"]

    with pytest.raises(StockUpdateError, match="the offer has stock in warehouses 1, 2: say which with"):
        run_single(engine, sku, "main", 3)
    result = run_single(engine, sku, "main", 3, warehouse_id="2")

    assert result is not None and result.ok and result.found == "new stock"
    held = state.record_by_id(MAIN, record["id"])
    assert [w["value"] for w in held["stock"] if w["warehouse_id"] == 2] == [3]
    assert offer_row(engine, sku, MAIN)["stock"] == held["general_stock"] == record["general_stock"] + 3


# --------------------------------------------------------------------------------------------- bulk


def test_a_bulk_of_500_goes_out_in_10_requests_at_the_accounts_pace(
    serve_sandbox, engine, db_env, tmp_path, monkeypatch
):
    """Sandbox rate limit on (3/s): 500 MAIN changes, an FBE row and an unknown SKU; 10 saves, no 429."""
    state = SandboxState(products=60, main_products=700, rate_limit=True)
    with serve_sandbox(state) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        sync_account_once(engine, state, MAIN)
        records = published(state, 500)
        wanted = {r["part_number"]: (r["general_stock"] + 1 + i % 7) for i, r in enumerate(records)}
        lines = [f"{sku},main,{n}" for sku, n in wanted.items()]
        lines[100:100] = ["EMG1,fbe,4", "NOSUCH,main,2"]
        csv_file = tmp_path / "stock.csv"
        csv_file.write_text("sku,account,stock\n" + "\n".join(lines) + "\n")
        log_before = len(state.request_log)

        result = cli("update-stock", "--file", str(csv_file), "--format", "json")

    assert result.exit_code == 1, result.output  # two lines did not apply
    rows = json.loads(result.stdout)
    refused = {row["sku"]: row for row in rows if row["status"] != "applied"}
    assert set(refused) == {"EMG1", "NOSUCH"}
    assert (refused["EMG1"]["line"], refused["EMG1"]["account"]) == ("102", "FBE")
    assert refused["EMG1"]["message"].startswith(f"EMG1: {FBE_REFUSAL}")
    assert refused["NOSUCH"]["message"].startswith("NOSUCH is not published on eMAG MAIN (no such offer")
    assert "stock updates: 500 applied, 2 invalid" in result.stderr

    saves = saves_sent(state)
    assert len(saves) == 10 and all(s.account == "main" for s in saves)
    sent = [e for s in state.saves if s.account == "main" for e in [s.entity]]
    assert len(sent) == 500 and all(set(e) == {"id", "stock"} for e in sent)
    # Every save went out once and was answered 200: none was turned back for going faster than the
    # account's 3 requests/s (a read answered 429 at a window's edge is retried by the client, see
    # emag_sync.api.ratelimit, and would show here as an 11th save if it were one).
    assert [s.status_code for s in saves] == [200] * 10
    reads = [r for r in state.request_log[log_before:] if r.resource == "product_offer"]
    assert len(reads) <= 2 * (1 + 700 // 100 + 1) + 2  # current values, then the re-read: pages, not 500 ids

    audits = stock_audits(engine)
    assert len(audits) == 500
    assert {(a["status"], a["emag_answer"], a["reread_found"], a["reread_source"]) for a in audits} == {
        ("applied", "accepted", "new stock", "save")
    }
    assert all(a["reread_stock"] == a["new_stock"] == wanted[a["sku"]] for a in audits)
    for record in records:  # the database equals eMAG
        held = state.record_by_id(MAIN, record["id"])
        row = offer_row(engine, record["part_number"], MAIN)
        assert held["stock"] == [{"warehouse_id": 1, "value": wanted[record["part_number"]]}]
        assert (row["stock"], row["available_stock"], row["reserved_stock"]) == (
            held["general_stock"], held["estimated_stock"], held["general_stock"] - held["estimated_stock"],
        )  # fmt: skip


def test_a_file_zeroing_30_percent_is_refused_without_the_flag_and_applied_with_it(
    sandbox, engine, db_env, tmp_path
):
    state = sandbox.state
    sync_account_once(engine, state, MAIN)  # 200 active offers
    zeros = [r["part_number"] for r in published(state, 60)]
    other = published(state, 61)[60]["part_number"]
    csv_file = tmp_path / "stock.csv"
    lines = "".join(f"{sku},main,0\n" for sku in zeros) + f"{other},main,9\n"
    csv_file.write_text("sku,account,stock\n" + lines)

    refused = cli("update-stock", "--file", str(csv_file))

    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.strip() == (
        "emag-sync: main: the input sets 60 of the account's 200 active offers (30%) to stock 0, more than "
        "the 20% EMAG_MAX_ZERO_STOCK_SHARE allows: nothing was sent. If the shelf is really empty, pass "
        "--allow-mass-zero (flow parameter allow_mass_zero)"
    )
    assert state.request_log == [] and audit_rows(engine) == []

    allowed = cli("update-stock", "--file", str(csv_file), "--allow-mass-zero")

    assert allowed.exit_code == 0, allowed.output
    audits = stock_audits(engine)
    assert len(audits) == 61 and {a["status"] for a in audits} == {"applied"}
    assert {a["mass_zero_allowed"] for a in audits if a["new_stock"] == 0} == {True}
    assert [a["mass_zero_allowed"] for a in audits if a["new_stock"] != 0] == [False]  # only the zeros say so
    assert all(offer_row(engine, sku, MAIN)["stock"] == 0 for sku in zeros)
    assert "(mass zero allowed)" in cli("offer-history", "--limit", "2").stdout


def test_the_guard_compares_the_share_exactly(sandbox, engine, monkeypatch):
    """EMAG_MAX_ZERO_STOCK_SHARE as typed, compared as a Decimal: 20% of 200 offers is 40, and 40 pass."""
    sync_account_once(engine, sandbox.state, MAIN)  # 200 active offers: 20% is 40
    requests = [make_stock_request(f"EMG{i}", "main", 0, accounts=REGISTERED) for i in range(1, 41)]
    assert check_mass_zero(engine, requests, max_share=Decimal("0.20"), allow=False) == set()  # 40 of 200
    more = [*requests, make_stock_request("EMG41", "main", 0, accounts=REGISTERED)]
    with pytest.raises(MassZeroStockError, match="sets 41 of the account's 200 active offers"):
        check_mass_zero(engine, more, max_share=Decimal("0.20"), allow=False)
    assert check_mass_zero(engine, more, max_share=Decimal("0.205"), allow=False) == set()
    assert check_mass_zero(engine, more, max_share=Decimal("0.20"), allow=True) == {MAIN}
    monkeypatch.setenv("EMAG_MAX_ZERO_STOCK_SHARE", "1.5")
    with pytest.raises(ConfigError, match="EMAG_MAX_ZERO_STOCK_SHARE='1.5' is refused"):
        get_settings()
    monkeypatch.setenv("EMAG_MAX_ZERO_STOCK_SHARE", "0.25")
    assert get_settings().emag_max_zero_stock_share == Decimal("0.25")


# --------------------------------------------------------------------------------------------- interrupted


def test_a_killed_bulk_leaves_every_intent_and_the_next_run_reconciles_them(
    serve_sandbox, engine, db_env, tmp_path, monkeypatch
):
    """SIGKILL right after the sandbox applied the first chunk of 50, before its answer arrived."""
    state = SandboxState(products=60, main_products=200, rate_limit=False)
    with serve_sandbox(state) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("EMAG_REQUESTS_PER_SECOND", "30")  # the sandbox has no limit: the test's pace
        sync_account_once(engine, state, MAIN)
        records = published(state, 61)
        wanted = {r["part_number"]: r["general_stock"] + 3 for r in records}
        csv_file = tmp_path / "stock.csv"
        csv_file.write_text(
            "sku,account,stock\n" + "".join(f"{s},main,{n}\n" for s, n in list(wanted.items())[:60])
        )
        state.set_faults(MAIN, Faults(save_answer_delay_seconds=60))
        emag_sync = Path(sys.executable).with_name("emag-sync")
        process = subprocess.Popen(
            [str(emag_sync), "update-stock", "--file", str(csv_file)],
            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while len(state.saves) < 50 and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.02)
            assert len(state.saves) == 50, process.communicate(timeout=5)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == -signal.SIGKILL

        audits = stock_audits(engine)
        assert len(audits) == 50 and {a["status"] for a in audits} == {"sending"}
        assert [a["new_stock"] for a in audits] == list(wanted.values())[:50]
        shown = cli("offer-history", "--limit", "100").stdout
        assert shown.count("interrupted") >= 50

        state.set_faults(MAIN, Faults())
        age_intents(engine)
        reads_before = sum(1 for r in state.request_log if r.resource == "product_offer")
        last = records[60]
        result = cli(
            "update-stock",
            "--sku",
            last["part_number"],
            "--account",
            "main",
            "--stock",
            str(wanted[last["part_number"]]),
        )
        assert result.exit_code == 0, result.output
        assert (
            "MAIN: 50 interrupted stock update(s) reconciled from eMAG: 50 applied (emag-sync offer-history shows them)"
            in result.stdout
        )
        reads = sum(1 for r in state.request_log if r.resource == "product_offer") - reads_before
        # the 50 read back from the catalogue's count and pages, not 50 reads by id; then the one offer
        # sent, read before and after its save
        assert reads <= 10, reads

    audits = stock_audits(engine)
    assert [(a["status"], a["reread_source"]) for a in audits[:50]] == [("applied", "reconcile")] * 50
    for record in records[:50]:
        held = state.record_by_id(MAIN, record["id"])
        row = offer_row(engine, record["part_number"], MAIN)
        assert held["general_stock"] == row["stock"] == wanted[record["part_number"]]
    assert "interrupted" not in cli("offer-history", "--limit", "100").stdout


class Died(BaseException):
    """The run's process going away."""


class DiesAfterSending:
    def __init__(self, inner) -> None:
        self.inner = inner

    def save_offers(self, entities, *, subject=""):
        self.inner.save_offers(entities, subject=subject)
        raise Died

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_sync_reconciles_interrupted_stock_from_what_it_read(sandbox, engine):
    state = sandbox.state
    sync_account_once(engine, state, MAIN)
    records = published(state, 2)
    requests = [
        make_stock_request(r["part_number"], "main", r["general_stock"] + 9, accounts=REGISTERED)
        for r in records
    ]
    with apply.emag_writers(get_settings()) as writer_for, pytest.raises(Died):
        apply.run_stock_bulk(engine, requests, lambda account: DiesAfterSending(writer_for(account)), TESTER)
    age_intents(engine)
    read_started_at = datetime.now(UTC)
    sync_account_once(engine, state, MAIN)
    requests_before = len(state.request_log)

    done = reconcile_interrupted_from_database(engine, MAIN, read_started_at)

    assert len(state.request_log) == requests_before  # no eMAG request
    assert [(r.sku, r.status, r.found, r.kind) for r in done] == [
        (r["part_number"], "applied", "new stock", "stock") for r in records
    ]
    assert {(a["reread_source"], a["reread_stock"]) for a in stock_audits(engine)} == {
        ("sync", r["general_stock"] + 9) for r in records
    }


# --------------------------------------------------------------------------------------------- the sync


def test_a_stock_push_during_a_sync_is_not_reverted_by_it(sandbox, engine):
    """The sync read the page before the push was confirmed, and loads it after: the push stays."""
    state = sandbox.state
    sync_account_once(engine, state, MAIN)
    record = published(state, 1)[0]
    sku, before = record["part_number"], record["general_stock"]
    read_at = datetime.now(UTC)
    page = state.catalogue_records(MAIN)  # the sync's page, read before the push

    result = run_single(engine, sku, "main", before + 20)
    assert result is not None and result.ok
    with engine.begin() as conn:  # the sync's run, as tasks.sync_account starts it
        run_id = conn.execute(
            insert(sync_runs)
            .values(
                account_type="main", account="main", status="running", items_per_page=100, pages_per_batch=5
            )
            .returning(sync_runs.c.id)
        ).scalar_one()
    frames = transform_batch(page, MAIN, pages=1, read_at=read_at, synced_at=datetime.now(UTC))
    load_batch(engine, run_id, MAIN, frames, last_page=1)

    row = offer_row(engine, sku, MAIN)
    held = state.record_by_id(MAIN, record["id"])
    assert row["stock"] == held["general_stock"] == before + 20  # not the page's `before`
    assert row["available_stock"] == held["estimated_stock"]

    sync_account_once(engine, state, MAIN)  # a later read: eMAG's own values, which are the pushed ones
    assert offer_row(engine, sku, MAIN)["stock"] == before + 20

    # Emptied by a push while the sync's page (read before it) says there is stock: kept at 0, not sellable.
    read_at = datetime.now(UTC)
    page = state.catalogue_records(MAIN)
    assert run_single(engine, sku, "main", 0).ok
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(sync_runs)
            .values(
                account_type="main", account="main", status="running", items_per_page=100, pages_per_batch=5
            )
            .returning(sync_runs.c.id)
        ).scalar_one()
    frames = transform_batch(page, MAIN, pages=1, read_at=read_at, synced_at=datetime.now(UTC))
    load_batch(engine, run_id, MAIN, frames, last_page=1)
    row = offer_row(engine, sku, MAIN)
    assert (row["stock"], row["available_stock"], row["visibility"]) == (0, 0, "hidden")


# --------------------------------------------------------------------------------------------- Prefect


def test_flows_update_stock_and_publish_the_result_table(prefect_harness, sandbox, engine, db_env):
    from prefect.artifacts import Artifact
    from prefect.exceptions import FailedRun

    import tasks.stock as tasks_stock
    from flows.update_stock import emag_update_offer_stock, emag_update_offer_stock_bulk

    state = sandbox.state
    sync_account_once(engine, state, MAIN)
    sync_account_once(engine, state, FBE)
    first, second = published(state, 2)

    row = emag_update_offer_stock(sku=first["part_number"], account="MAIN", stock=first["general_stock"] + 1)
    assert (row["status"], row["new stock"], row["warehouse"], row["re-read"]) == (
        "applied", str(first["general_stock"] + 1), "1", "new stock",
    )  # fmt: skip
    [audit] = stock_audits(engine)
    assert audit["source"] == "flow" and audit["requested_by"].startswith("prefect:") and audit["flow_run_id"]
    fbe_sku = state.catalogue_records(FBE)[0]["part_number"]
    with pytest.raises(FailedRun, match=f"fbe: {fbe_sku}: {FBE_REFUSAL}"):
        emag_update_offer_stock(sku=fbe_sku, account="fbe", stock=1)

    with pytest.raises(FailedRun, match="2 of 3 stock update line"):
        emag_update_offer_stock_bulk(
            csv_text=f"sku,account,stock\n{second['part_number']},main,5\n{fbe_sku},fbe,1\nKIT[/2],main,x\n"
        )
    assert state.record_by_id(MAIN, second["id"])["general_stock"] == 5
    artifact = Artifact.get(tasks_stock.ARTIFACT_KEY)
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [(r["line"], r["status"]) for r in table] == [("2", "applied"), ("3", "invalid"), ("4", "invalid")]
    assert table[2]["sku"] == r"KIT\[\/2\]"  # the UI renders cells as markdown: text is escaped
    assert "1 applied, 2 invalid" in artifact.description

    zeros = "".join(f"{r['part_number']},main,0\n" for r in published(state, 60))
    with pytest.raises(FailedRun, match="EMAG_MAX_ZERO_STOCK_SHARE allows: nothing was sent"):
        emag_update_offer_stock_bulk(csv_text="sku,account,stock\n" + zeros)
    assert (
        len(emag_update_offer_stock_bulk(csv_text="sku,account,stock\n" + zeros, allow_mass_zero=True)) == 60
    )


def test_the_stock_flows_offer_a_typed_form_with_help():
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema, parameter_schema_from_entrypoint

    from flows.update_stock import emag_update_offer_stock, emag_update_offer_stock_bulk

    schema = parameter_schema(emag_update_offer_stock.fn).model_dump()
    props = schema["properties"]
    assert list(props) == ["sku", "account", "stock", "warehouse_id"]
    assert schema["required"] == ["sku", "account", "stock"]
    assert all(p.get("description") for p in props.values()), "every field has its help text"
    assert props["stock"] | {"type": "integer", "minimum": 0, "maximum": 65535} == props["stock"]
    assert props["warehouse_id"]["type"] == "integer" and "anyOf" not in props["warehouse_id"]
    assert (
        parameter_schema_from_entrypoint("flows/update_stock.py:emag_update_offer_stock").model_dump()
        == schema
    )
    given = emag_update_offer_stock.validate_parameters(
        {"sku": "EMG1", "account": " MAIN ", "stock": "12", "warehouse_id": ""}
    )
    assert (given["account"], given["stock"], given["warehouse_id"]) == ("main", 12, None)
    for bad in ("70000", "-1", "2.5"):
        with pytest.raises(ParameterTypeError):
            emag_update_offer_stock.validate_parameters({"sku": "EMG1", "account": "main", "stock": bad})

    bulk = parameter_schema(emag_update_offer_stock_bulk.fn).model_dump()
    assert list(bulk["properties"]) == ["csv_text", "allow_mass_zero"] and bulk["required"] == ["csv_text"]
    assert all(p.get("description") for p in bulk["properties"].values())
