"""Price updates that end where eMAG is (issue 17): one rule for settled and uncertain outcomes, files of
any size, two updates of one offer at once, the guard and the audit against eMAG's current values.
Real sandbox on a loopback port (stand-ins in front of it where eMAG must misbehave), real PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from emag_sandbox.state import Faults
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.cli import app
from emag_sync.errors import PriceUpdateError
from emag_sync.prices import apply
from emag_sync.prices.reconcile import reconcile_interrupted_from_database
from emag_sync.schema import price_updates
from emag_sync.settings import get_settings
from tests.price_helpers import (
    EMG1_ID,
    EMG469_ID,
    EMG470_ID,
    TESTER,
    audit_rows,
    client_for,
    make_request,
    offer_row,
    parse_price_csv,
    seed_offers,
    sync_account_once,
    valid_rows,
)

FBE = legacy_account(AccountType.FBE)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    from emag_sync.cli.console import console

    monkeypatch.setattr(console, "width", 400)


# ---------------------------------------------------------------------------------------------- item 8


def test_a_file_of_ten_thousand_rows_is_looked_up_in_batches(sandbox, engine):
    """10,050 rows (dry run): one IN list of every pair made PostgreSQL answer 'stack depth limit
    exceeded' and nothing was validated or sent."""
    state = sandbox.state
    seed_offers(engine, state, FBE)
    good = valid_rows(state, FBE, 50)
    lines = ["sku,account,price", *(f"NOSUCH{n},fbe,10" for n in range(10_000))]
    lines += [f"{sku},fbe,{price}" for sku, price in good]  # found past the first batches
    parsed = parse_price_csv("\n".join(lines) + "\n")

    with apply.emag_writers(get_settings()) as writer_for:
        results = apply.run_bulk(engine, parsed.requests, writer_for, TESTER, dry_run=True)

    assert len(results) == 10_050
    assert [r.status for r in results[-50:]] == ["not-sent"] * 50
    assert {r.message for r in results[-50:]} == {"valid (dry run, not sent)"}
    assert {r.status for r in results[:-50]} == {"invalid"}
    assert results[9_999].message.startswith("NOSUCH9999 is not published on eMAG FBE")
    assert audit_rows(engine) == [] and not [r for r in state.request_log if r.action == "save"]
    # eMAG's current values of the 50: its count and 100-record pages (500 records), not 50 reads by id
    assert [r.action for r in state.request_log] == ["count"] + ["read"] * 6


# ---------------------------------------------------------------------------------------------- item 3


class RefusedButSavedTransport(httpx.BaseTransport):
    """eMAG saving the whole request and still answering isError (a save it reports as failed)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.inner.handle_request(request)
        if not request.url.path.endswith("/offer/save"):
            return answer
        answer.close()
        refusal = {"isError": True, "messages": ["Internal error, please retry"], "results": []}
        return httpx.Response(200, json=refusal, request=request)


class LostSaveTransport(httpx.BaseTransport):
    """The network losing every offer/save before eMAG saw it; the test delivers it late (or never)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/offer/save"):
            raise httpx.ReadError("connection reset by peer", request=request)
        return self.inner.handle_request(request)


def age_unsettled(engine, seconds: float = 60) -> None:
    """The updates were sent a while ago: past the time a save in flight may still land."""
    with engine.begin() as conn:
        conn.execute(
            update(price_updates).values(sent_at=price_updates.c.sent_at - timedelta(seconds=seconds))
        )


def test_a_refused_save_whose_re_read_shows_the_new_prices_is_applied(sandbox, engine):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    with client_for(FBE, RefusedButSavedTransport()) as client:
        result = apply.run_single(engine, make_request("EMG470", "fbe", "250"), lambda _: client, TESTER)

    assert result is not None and (result.status, result.answer, result.found) == (
        "applied",
        "refused",
        "new prices",
    )
    [audit] = audit_rows(engine)
    assert (audit["status"], audit["emag_answer"]) == ("applied", "refused")
    assert audit["emag_messages"] == ["Internal error, please retry"]  # eMAG's answer kept beside it
    row = offer_row(engine, "EMG470")
    assert row["sale_price"] == Decimal("250") and row["prices_pushed_at"] == audit["reread_at"]


@pytest.mark.parametrize(("lands_late", "settled_as"), [(True, "applied"), (False, "not-applied")])
def test_a_lost_answer_with_the_old_price_is_uncertain_until_a_later_read(
    sandbox, engine, lands_late, settled_as
):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    with client_for(FBE, LostSaveTransport()) as client:
        result = apply.run_single(engine, make_request("EMG470", "fbe", "250"), lambda _: client, TESTER)

    assert result is not None and (result.status, result.answer, result.found) == (
        "uncertain",
        "no-answer",
        "old prices",
    )
    assert "the save may land late: the next price run or sync of fbe settles it" in result.message
    if lands_late:
        state.save(FBE, "offer", "save", [{"id": EMG470_ID, "sale_price": "250.0000"}])
    age_unsettled(engine)

    notices: list[str] = []
    with client_for(FBE) as client:  # the next price run of the account reads eMAG first
        apply.run_single(
            engine,
            make_request("EMG469", "fbe", "99.90"),
            lambda _: client,
            TESTER,
            notify=notices.append,
        )

    assert notices == [
        f"FBE: 1 uncertain (lost answer) price update(s) reconciled from eMAG: 1 {settled_as} "
        "(emag-sync price-history shows them)"
    ]
    first, second = audit_rows(engine)
    assert (first["status"], first["reread_source"], second["status"]) == (settled_as, "reconcile", "applied")
    assert first["emag_answer"] == "no-answer" and "ReadError" in first["emag_response"]["error"]
    emag_holds = Decimal(state.record_by_sku(FBE, "EMG470")["sale_price"])
    assert (
        offer_row(engine, "EMG470")["sale_price"] == emag_holds == Decimal("250" if lands_late else "223.11")
    )


def test_a_sync_settles_an_uncertain_update_from_what_it_read(sandbox, engine):
    state = sandbox.state
    sync_account_once(engine, state, FBE)
    with client_for(FBE, LostSaveTransport()) as client:
        apply.run_single(engine, make_request("EMG470", "fbe", "250"), lambda _: client, TESTER)
    state.save(FBE, "offer", "save", [{"id": EMG470_ID, "sale_price": "250.0000"}])  # landed late
    age_unsettled(engine)
    read_started_at = datetime.now(UTC)
    sync_account_once(engine, state, FBE)

    done = reconcile_interrupted_from_database(engine, FBE, read_started_at)

    assert [(r.sku, r.status, r.found) for r in done] == [("EMG470", "applied", "new prices")]
    [audit] = audit_rows(engine)
    assert (audit["status"], audit["reread_source"]) == ("applied", "sync")


# ---------------------------------------------------------------------------------------------- item 9


class SlowFirstSaveTransport(httpx.BaseTransport):
    """A's network: its first offer/save waits for ``go`` (B has read the offer), reaches eMAG, and its
    answer comes back ``delay`` seconds later."""

    def __init__(self, delay: float) -> None:
        self.inner = httpx.HTTPTransport()
        self.delay = delay
        self.sending, self.go, self.landed = threading.Event(), threading.Event(), threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/offer/save") or self.landed.is_set():
            return self.inner.handle_request(request)
        self.sending.set()
        assert self.go.wait(10)
        answer = self.inner.handle_request(request)
        answer.read()
        self.landed.set()
        time.sleep(self.delay)
        return answer


class SignalsReadTransport(httpx.BaseTransport):
    """B's network: says when its read of the offer's current values has been answered."""

    def __init__(self, read: threading.Event) -> None:
        self.inner = httpx.HTTPTransport()
        self.read = read

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.inner.handle_request(request)
        if request.url.path.endswith("/product_offer/read"):
            answer.read()
            self.read.set()
        return answer


def test_two_updates_of_one_offer_at_once_end_where_emag_is(sandbox, engine):
    """A's save is on its way; B reads the offer, then A lands on eMAG and is answered late. B waits for
    A's confirmation before sending, and its audit row starts from A's price."""
    state = sandbox.state
    seed_offers(engine, state, FBE)
    slow = SlowFirstSaveTransport(delay=1.5)
    first: list = []

    def update_a() -> None:
        with client_for(FBE, slow) as client:
            first.append(
                apply.run_single(engine, make_request("EMG469", "fbe", "99.90"), lambda _: client, TESTER)
            )

    a = threading.Thread(target=update_a)
    a.start()
    try:
        assert slow.sending.wait(10)
        with client_for(FBE, SignalsReadTransport(slow.go)) as client:
            second = apply.run_single(
                engine, make_request("EMG469", "fbe", "100.50"), lambda _: client, TESTER
            )
    finally:
        slow.go.set()
        a.join(30)

    assert [r.status for r in (*first, second)] == ["applied", "applied"]
    assert [s.entity["sale_price"] for s in state.saves] == ["99.9000", "100.5000"]
    emag_holds = Decimal(state.record_by_sku(FBE, "EMG469")["sale_price"])
    assert offer_row(engine, "EMG469")["sale_price"] == emag_holds == Decimal("100.50")
    a_audit, b_audit = audit_rows(engine)
    assert a_audit["answered_at"] <= b_audit["sent_at"]  # B went out once A was confirmed
    assert (a_audit["old_sale_price"], b_audit["old_sale_price"]) == (Decimal("118.0257"), Decimal("99.90"))


# ---------------------------------------------------------------------------------------------- item 10


def test_the_guard_and_the_audit_compare_with_what_emag_holds_now(sandbox, engine, db_env):
    """eMAG holds 130.00 (changed on eMAG since the sync), the database 118.0257: 85 is a 28% cut of the
    stored price but 34.6% of eMAG's, beyond the 30% guard."""
    state = sandbox.state
    seed_offers(engine, state, FBE)
    state.save(FBE, "offer", "save", [{"id": EMG469_ID, "sale_price": "130.0000"}])
    assert offer_row(engine, "EMG469")["sale_price"] == Decimal("118.0257")
    cut = ["update-price", "--sku", "EMG469", "--account", "fbe", "--price", "85"]
    runner = CliRunner()

    refused = runner.invoke(app, cut)

    assert refused.exit_code == 1
    assert refused.stderr == (
        "emag-sync: EMG469 on eMAG FBE: price 85 is 34.6% below the current 130.0000 RON, more than the 30% "
        "EMAG_MAX_PRICE_CHANGE allows; pass --allow-large-change if the change is intended\n"
    )
    assert "130.0000" in refused.stdout  # the change shown is from eMAG's current price
    assert state.saves[1:] == [] and audit_rows(engine) == []

    applied = runner.invoke(app, [*cut, "--allow-large-change"])
    assert applied.exit_code == 0, applied.output
    [audit] = audit_rows(engine)
    assert audit["old_sale_price"] == Decimal("130") and audit["large_change_allowed"] is True
    assert offer_row(engine, "EMG469")["sale_price"] == Decimal("85")


def test_the_current_values_of_a_bulk_file_come_from_emag(sandbox, engine):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    state.save(FBE, "offer", "save", [{"id": EMG469_ID, "sale_price": "130.0000"}])
    requests = [make_request("EMG469", "fbe", "85"), make_request("EMG470", "fbe", "250")]
    with client_for(FBE) as client:
        results = apply.run_bulk(engine, requests, lambda _: client, TESTER)

    assert [r.status for r in results] == ["invalid", "applied"]
    assert "34.6% below the current 130.0000 RON" in results[0].message
    assert results[0].old_price == Decimal("130")


class OtherRecordsTransport(httpx.BaseTransport):
    """eMAG ignoring the id filter of product_offer/read: it answers another offer's record."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/product_offer/read"):
            data = json.loads(request.content)["data"]
            headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
            other = {**data, "id": EMG1_ID}
            request = httpx.Request("POST", request.url, headers=headers, json={"data": other})
        return self.inner.handle_request(request)


class FailingReadTransport(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)


@pytest.mark.parametrize(
    ("transport", "expected"),
    [
        (
            OtherRecordsTransport,  # the client's filter check refuses an answer of other records
            "fbe: reading the offers' current prices from eMAG failed, so nothing was validated or sent: "
            "product_offer/read: offer id 200001405: filtered by id 200001405, eMAG answered 1 records, 1 with "
            "another id",
        ),
        (
            FailingReadTransport,
            "fbe: reading the offers' current prices from eMAG failed, so nothing was validated or sent: "
            "product_offer/read: offer id 200001405: gave up after 1 attempts",
        ),
    ],
)
def test_a_current_read_that_fails_or_answers_other_offers_stops_in_one_line(
    sandbox, engine, monkeypatch, transport, expected
):
    monkeypatch.setenv("EMAG_MAX_ATTEMPTS", "1")
    state = sandbox.state
    seed_offers(engine, state, FBE)
    request = make_request("EMG469", "fbe", "100")
    with client_for(FBE, transport()) as client, pytest.raises(PriceUpdateError) as caught:
        apply.run_single(engine, request, lambda _: client, TESTER)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    with client_for(FBE, transport()) as client, pytest.raises(PriceUpdateError):
        apply.run_bulk(engine, [request], lambda _: client, TESTER, dry_run=True)
    assert state.saves == [] and audit_rows(engine) == []


def test_the_cli_stops_in_one_line_when_emags_current_values_cannot_be_read(sandbox, engine, db_env):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    state.set_faults(FBE, Faults(error_pages={1}))  # every read, by id too, answers isError

    result = CliRunner().invoke(
        app, ["update-price", "--sku", "EMG469", "--account", "fbe", "--price", "100"]
    )

    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr == (
        "emag-sync: fbe: reading the offers' current prices from eMAG failed, so nothing was validated or "
        "sent: product_offer/read: offer id 200001405: eMAG answered isError: true (eMAG says: Could not read "
        "page 1 of product offers, please retry later)\n"
    )
    assert state.saves == [] and audit_rows(engine) == []
