"""The price audit as the operator relies on it: intent before sending, eMAG's answer apart from the
re-read, interrupted updates visible and reconciled (from eMAG or from a sync's read), the guard against
typos, the sandbox's refusal fault. Real sandbox on a port, real PostgreSQL, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from emag_sandbox.state import Faults, SandboxState
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.cli import app
from emag_sync.locks import price_run_lock
from emag_sync.prices import apply
from emag_sync.prices.reconcile import reconcile_interrupted_from_database
from emag_sync.schema import price_updates
from emag_sync.settings import get_settings
from tests.price_helpers import (
    EMG1_ID,
    EMG469_ID,
    EMG470_ID,
    PRODUCTS,
    TESTER,
    audit_rows,
    client_for,
    make_request,
    offer_row,
    saves_sent,
    seed_offers,
    sync_account_once,
    valid_rows,
)

FBE = legacy_account(AccountType.FBE)
LOCKED = f"Offer {EMG469_ID} is locked for editing"


@pytest.fixture
def sandbox_state() -> SandboxState:
    """The conftest sandbox, large enough to hold EMG469 and EMG470 (FBE), rate limit off."""
    return SandboxState(products=PRODUCTS, rate_limit=False)


@pytest.fixture
def sandbox(sandbox_env):
    return sandbox_env


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables wide enough that a cell's text stays on one line (piped output is 140 columns)."""
    from emag_sync.cli.console import console

    monkeypatch.setattr(console, "width", 400)


def reads_sent(state: SandboxState) -> int:
    return sum(1 for r in state.request_log if (r.resource, r.action) == ("product_offer", "read"))


class Died(BaseException):
    """The run's process going away (not an error anyone handles)."""


class DiesAfterSending:
    """A writer whose run stops right after its save went out, before eMAG's answer is read: what SIGKILL
    does to a price run, within this process. Entities of offers in ``lost`` never reach the sandbox."""

    def __init__(self, inner, *, lost: set[str]) -> None:
        self.inner, self.lost = inner, lost

    def save_offers(self, entities, *, subject=""):
        delivered = [e for e in entities if str(e["id"]) not in self.lost]
        if delivered:
            self.inner.save_offers(delivered, subject=subject)
        raise Died

    def read_offer(self, emag_id):
        return self.inner.read_offer(emag_id)


def die_while_sending(engine, prices: dict[str, str], *, lost: tuple[str, ...] = ()) -> None:
    """One bulk run of FBE ``{sku: price}`` that dies once its chunk is sent (``lost`` SKUs undelivered)."""
    requests = [make_request(sku, "fbe", price) for sku, price in prices.items()]
    ids = apply.find_offers(engine, [(sku, FBE) for sku in lost])
    with client_for(FBE) as client, pytest.raises(Died):
        writer = DiesAfterSending(client, lost={str(offer.emag_offer_id) for offer in ids.values()})
        apply.run_bulk(engine, requests, lambda _: writer, TESTER)


def age_intents(engine, seconds: float = 60) -> None:
    """The interrupted runs died a while ago (past the settle time a save may still be in flight)."""
    with engine.begin() as conn:
        conn.execute(
            update(price_updates)
            .where(price_updates.c.status == "sending")
            .values(sent_at=price_updates.c.sent_at - timedelta(seconds=seconds))
        )


def history(*args: str) -> str:
    result = CliRunner().invoke(app, ["price-history", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


# ---------------------------------------------------------------------------------------------- intent


def test_the_intent_is_committed_before_the_request_goes_out(sandbox, engine):
    seed_offers(engine, sandbox.state, FBE)
    seen_while_sending: list[dict] = []

    class Peeking:
        def __init__(self, inner) -> None:
            self.inner = inner

        def save_offers(self, entities, *, subject=""):
            seen_while_sending.extend(audit_rows(engine))  # another connection: only what was committed
            return self.inner.save_offers(entities, subject=subject)

        def read_offer(self, emag_id):
            return self.inner.read_offer(emag_id)

    with client_for(FBE) as client:
        result = apply.run_single(
            engine, make_request("EMG469", "fbe", "99.90"), lambda _: Peeking(client), TESTER
        )

    [intent] = seen_while_sending
    assert intent["status"] == "sending" and intent["answered_at"] is None and intent["emag_answer"] is None
    assert intent["sent_at"] is not None and intent["sent_entity"] == {
        "id": EMG469_ID,
        "sale_price": "99.9000",
    }
    [done] = audit_rows(engine)
    assert (done["id"], done["status"], done["emag_answer"]) == (intent["id"], "applied", "accepted")
    assert result is not None and result.audit_id == intent["id"]


# ---------------------------------------------------------------------------------------------- reconciling


def test_interrupted_updates_are_shown_and_the_next_price_run_reconciles_them_from_emag(
    sandbox, engine, db_env
):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    # EMG469 applied; EMG470 never arrived; EMG1 applied, then changed again on eMAG
    die_while_sending(engine, {"EMG469": "99.90", "EMG470": "250", "EMG1": "1000"}, lost=("EMG470",))
    state.save(FBE, "offer", "save", [{"id": EMG1_ID, "sale_price": "1111.1100"}])
    age_intents(engine)
    assert [a["status"] for a in audit_rows(engine)] == ["sending"] * 3
    shown = history()
    assert shown.count("interrupted") >= 3 and "the run sending it stopped before eMAG answered" in shown

    reads_before = reads_sent(state)
    notices: list[str] = []
    with apply.emag_writers(get_settings()) as writer_for:
        result = apply.run_single(
            engine, make_request("EMG2", "fbe", "3000"), writer_for, TESTER, notify=notices.append
        )

    assert result is not None and result.ok
    # one read per interrupted offer, through the same client, then EMG2's current values
    assert reads_sent(state) - reads_before == 4
    assert notices == [
        "FBE: 3 interrupted price update(s) reconciled from eMAG: 1 applied, 1 not-applied, 1 uncertain "
        "(emag-sync price-history shows them)"
    ]
    audits = {a["sku"]: a for a in audit_rows(engine)}
    assert {sku: (a["status"], a["reread_found"]) for sku, a in audits.items()} == {
        "EMG469": ("applied", "new prices"),
        "EMG470": ("not-applied", "old prices"),
        "EMG1": ("uncertain", "other prices"),
        "EMG2": ("applied", None),
    }
    assert all(
        audits[s]["emag_answer"] == "no-answer" and audits[s]["reread_source"] == "reconcile"
        for s in ("EMG469", "EMG470", "EMG1")
    )
    landed, stayed, moved = (
        offer_row(engine, "EMG469"),
        offer_row(engine, "EMG470"),
        offer_row(engine, "EMG1"),
    )
    assert (
        landed["sale_price"] == Decimal("99.90")
        and landed["prices_pushed_at"] == audits["EMG469"]["reread_at"]
    )
    assert stayed["sale_price"] == Decimal("223.11") and stayed["prices_pushed_at"] is None
    assert (
        moved["sale_price"] == Decimal("1111.11") and moved["prices_pushed_at"] == audits["EMG1"]["reread_at"]
    )
    shown = history("--account", "fbe")
    assert "interrupted" not in shown and "not-applied" in shown and "new prices (reconcile," in shown
    assert "EMG2" not in history("--sku", "EMG469") and "EMG469" in history("--sku", "EMG469")


def test_updates_of_a_run_still_sending_are_left_to_it(sandbox, engine, db_env):
    seed_offers(engine, sandbox.state, FBE)
    die_while_sending(engine, {"EMG469": "99.90"})
    age_intents(engine)
    with price_run_lock(engine, FBE):  # a price run of FBE alive in another process
        assert "sending" in history() and "interrupted" not in history()
        with apply.emag_writers(get_settings()) as writer_for:
            assert apply.run_single(engine, make_request("EMG470", "fbe", "250"), writer_for, TESTER).ok
        assert [a["status"] for a in audit_rows(engine)] == ["sending", "applied"]
    assert "interrupted" in history()
    with apply.emag_writers(get_settings()) as writer_for:
        apply.run_bulk(engine, [make_request("EMG2", "fbe", "3000")], writer_for, TESTER)
    assert [a["status"] for a in audit_rows(engine)] == ["applied", "applied", "applied"]


def test_a_sync_resolves_interrupted_updates_from_what_it_loaded(sandbox, engine):
    state = sandbox.state
    sync_account_once(engine, state, FBE)
    die_while_sending(engine, {"EMG469": "99.90", "EMG470": "250"}, lost=("EMG470",))
    age_intents(engine)
    with price_run_lock(engine, FBE):  # (that run's rows are not reconciled by the next one: it is alive)
        die_while_sending(engine, {"EMG1": "1000"})  # sent after the sync's read started
    read_started_at = datetime.now(UTC) - timedelta(seconds=1)
    sync_account_once(engine, state, FBE)
    requests_before = len(state.request_log)

    with price_run_lock(engine, FBE):  # while a price run is sending, a sync leaves its rows alone
        assert reconcile_interrupted_from_database(engine, FBE, read_started_at) == []
    with engine.begin() as conn:  # in the caller's transaction
        done = reconcile_interrupted_from_database(conn, FBE, read_started_at)

    assert len(state.request_log) == requests_before  # no eMAG request
    assert [(r.sku, r.status, r.found) for r in done] == [
        ("EMG469", "applied", "new prices"),
        ("EMG470", "not-applied", "old prices"),
    ]
    audits = {a["sku"]: a for a in audit_rows(engine)}
    assert audits["EMG1"]["status"] == "sending"  # sent after the read began: the read proves nothing
    assert audits["EMG469"]["reread_source"] == "sync" and audits["EMG469"]["reread_at"] == read_started_at
    assert audits["EMG469"]["reread_prices"]["sale_price"] == "99.9000"


def test_a_killed_cli_run_leaves_its_intents_and_the_next_run_reconciles_them(
    serve_sandbox, engine, db_env, tmp_path, monkeypatch
):
    """SIGKILL right after the sandbox applied the first chunk of 50, before its answer arrived."""
    state = SandboxState(products=PRODUCTS, rate_limit=False)
    with serve_sandbox(state) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("EMAG_REQUESTS_PER_SECOND", "30")  # the sandbox has no limit: the test's pace
        seed_offers(engine, state, FBE)
        rows = valid_rows(state, FBE, 60)
        csv_file = tmp_path / "prices.csv"
        csv_file.write_text("sku,account,price\n" + "".join(f"{sku},fbe,{p}\n" for sku, p in rows))
        state.set_faults(FBE, Faults(save_answer_delay_seconds=60))
        emag_sync = Path(sys.executable).with_name("emag-sync")
        process = subprocess.Popen(
            [str(emag_sync), "update-price", "--file", str(csv_file)],
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

        audits = audit_rows(engine)
        assert len(audits) == 50 and {a["status"] for a in audits} == {"sending"}
        assert {a["sku"] for a in audits} == {sku for sku, _ in rows[:50]}
        shown = history("--limit", "100")
        assert shown.count("interrupted") >= 50

        state.set_faults(FBE, Faults())
        result = CliRunner().invoke(
            app, ["update-price", "--sku", rows[55][0], "--account", "fbe", "--price", rows[55][1]]
        )
        assert result.exit_code == 0, result.output
        assert "50 interrupted price update(s) reconciled from eMAG: 50 applied" in result.stdout

    audits = audit_rows(engine)
    assert [a["status"] for a in audits] == ["applied"] * 51
    for (sku, price), audit in zip(rows[:50], audits, strict=False):
        row = offer_row(engine, sku)
        assert row["sale_price"] == Decimal(price) and row["prices_pushed_at"] == audit["reread_at"]
    assert "interrupted" not in history("--limit", "100")


# ---------------------------------------------------------------------------------------------- refusals


def test_a_refusal_is_never_applied_even_when_emag_already_holds_the_price(sandbox, engine, db_env):
    """eMAG refuses a save of the price it holds ("locked for editing"); the re-read shows that price."""
    state = sandbox.state
    seed_offers(engine, state, FBE)
    set_faults = httpx.post(
        f"{sandbox.base_url}/_sandbox/faults/fbe", json={"refuse_saves": {str(EMG469_ID): LOCKED}}
    )
    assert set_faults.status_code == 200 and set_faults.json()["refuse_saves"] == {str(EMG469_ID): LOCKED}
    before = offer_row(engine, "EMG469")

    result = CliRunner().invoke(
        app, ["update-price", "--sku", "EMG469", "--account", "fbe", "--price", "118.0257"]
    )

    assert result.exit_code == 1
    assert (
        f"EMG469 on eMAG FBE: refused: eMAG refused: {LOCKED}; the re-read shows the asked-for prices"
        in result.stderr
    )
    [audit] = audit_rows(engine)
    assert (audit["status"], audit["emag_answer"], audit["reread_found"]) == (
        "refused",
        "refused",
        "same prices",
    )
    assert audit["emag_messages"] == [LOCKED]
    assert offer_row(engine, "EMG469") == before and before["prices_pushed_at"] is None
    assert state.saves == []
    shown = history()
    assert f"refused: {LOCKED}" in shown and "same prices (save" in shown

    state.set_faults(FBE, Faults())  # unlocked, the same request is accepted
    again = CliRunner().invoke(
        app, ["update-price", "--sku", "EMG469", "--account", "fbe", "--price", "118.0257"]
    )
    assert again.exit_code == 0 and audit_rows(engine)[-1]["status"] == "applied"


def test_the_refusal_fault_refuses_valid_saves_whole_and_round_trips(sandbox_state):
    faults = Faults.from_json({"refuse_saves": {str(EMG469_ID): LOCKED}})
    assert faults.refuse_saves == {EMG469_ID: LOCKED} and Faults.from_json(faults.to_json()) == faults
    sandbox_state.set_faults(FBE, faults)
    from emag_sandbox.state import RequestRefused

    with pytest.raises(RequestRefused) as caught:
        sandbox_state.save(
            FBE,
            "offer",
            "save",
            [{"id": EMG470_ID, "sale_price": "250"}, {"id": EMG469_ID, "sale_price": "99.90"}],
        )
    assert caught.value.messages == [LOCKED]
    assert sandbox_state.record_by_sku(FBE, "EMG470")["sale_price"] == "223.1100"  # all or nothing


# ---------------------------------------------------------------------------------------------- the guard


def test_a_40_percent_cut_is_refused_without_the_flag_and_applied_with_it_cli(
    sandbox, engine, db_env, monkeypatch
):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    cut = ["update-price", "--sku", "EMG470", "--account", "fbe", "--price", "133.87", "--min-price", "120"]
    runner = CliRunner()

    refused = runner.invoke(app, cut)
    assert refused.exit_code == 1
    assert refused.stderr == (
        "emag-sync: EMG470 on eMAG FBE: price 133.87 is 40% below the current 223.1100 RON, more than the 30% "
        "EMAG_MAX_PRICE_CHANGE allows; pass --allow-large-change if the change is intended\n"
    )
    assert saves_sent(state) == [] and audit_rows(engine) == []

    applied = runner.invoke(app, [*cut, "--allow-large-change"])
    assert applied.exit_code == 0, applied.output
    assert state.record_by_sku(FBE, "EMG470")["sale_price"] == "133.8700"
    [audit] = audit_rows(engine)
    assert audit["status"] == "applied" and audit["large_change_allowed"] is True
    assert "large change allowed" in history()

    monkeypatch.setenv("EMAG_MAX_PRICE_CHANGE", "0.5")  # the operator's own limit
    assert (
        runner.invoke(
            app, ["update-price", "--sku", "EMG470", "--account", "fbe", "--price", "200"]
        ).exit_code
        == 0
    )
    assert audit_rows(engine)[-1]["large_change_allowed"] is False


def test_the_readme_example_is_one_the_sandbox_accepts(sandbox, engine, db_env):
    seed_offers(engine, sandbox.state, FBE)
    args = "update-price --sku EMG469 --account fbe --price 99.90 --min-price 80 --max-price 130"
    result = CliRunner().invoke(app, args.split())
    assert result.exit_code == 0, result.output
    assert sandbox.state.record_by_sku(FBE, "EMG469")["sale_price"] == "99.9000"


def test_operator_text_is_shown_as_text(sandbox, engine, db_env, tmp_path):
    """A SKU or an eMAG message with brackets is data: the tables show it literally and never crash."""
    seed_offers(engine, sandbox.state, FBE)
    sandbox.state.set_faults(FBE, Faults(refuse_saves={EMG470_ID: "[bold]locked[/data] [sale_price]"}))
    csv_file = tmp_path / "prices.csv"
    csv_file.write_text("sku,account,price\nKIT[/2],fbe,10\nEMG470,fbe,250\n")
    result = CliRunner().invoke(app, ["update-price", "--file", str(csv_file)], terminal_width=250)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "KIT[/2]" in result.stdout and "[bold]locked[/data] [sale_price]" in result.stdout
    assert "[bold]locked[/data] [sale_price]" in history()


@pytest.mark.flow
def test_a_40_percent_cut_is_refused_without_the_flag_and_applied_with_it_flow(
    prefect_harness, sandbox, engine, db_env
):
    from prefect.exceptions import FailedRun

    from flows.update_price import emag_update_offer_price, emag_update_offer_prices_bulk

    state = sandbox.state
    seed_offers(engine, state, FBE)
    with pytest.raises(FailedRun) as caught:
        emag_update_offer_price(sku="EMG470", account="fbe", price="133.87", min_price="120")
    message = str(caught.value)
    assert "40% below the current 223.1100 RON" in message and "set allow_large_change to true" in message
    assert "--" not in message and saves_sent(state) == []

    row = emag_update_offer_price(
        sku="EMG470", account="FBE", price="133.87", min_price="120", max_price="", allow_large_change=True
    )
    assert row["status"] == "applied" and audit_rows(engine)[-1]["large_change_allowed"] is True

    with pytest.raises(FailedRun) as bulk:
        emag_update_offer_prices_bulk(csv_text="sku,account,price,min_price\nEMG469,fbe,70,60\n")
    assert "line 2: EMG469 on eMAG FBE: invalid: price 70 is 40.7% below" in str(bulk.value)
    assert "set allow_large_change to true" in str(bulk.value) and "line 2: line 2" not in str(bulk.value)
    rows = emag_update_offer_prices_bulk(
        csv_text="sku,account,price,min_price\nEMG469,fbe,70,60\n", allow_large_change=True
    )
    assert rows[0]["status"] == "applied" and len(saves_sent(state)) == 2


def test_a_full_sync_reconciles_interrupted_updates_on_its_own(sandbox, engine) -> None:
    """An update whose process died before eMAG answered (eMAG did apply it): the account's next sync, whose
    read starts after it, records what eMAG holds; no extra eMAG request for it."""
    from emag_sync.api.client import EmagClient
    from emag_sync.api.ratelimit import SlidingWindowLimiter
    from emag_sync.options import SyncOptions
    from tasks.sync_account import sync_account

    state = sandbox.state
    sync_account_once(engine, state, FBE)
    die_while_sending(engine, {"EMG469": "99.90"})
    age_intents(engine)
    config = get_settings().account_config(FBE)
    with EmagClient(config, limiter=SlidingWindowLimiter(1000, 100_000)) as client:
        run = sync_account(engine, client, FBE, SyncOptions())
    assert run.status == "succeeded"
    [audit] = [a for a in audit_rows(engine) if a["sku"] == "EMG469"]
    assert (audit["status"], audit["reread_source"]) == ("applied", "sync")
