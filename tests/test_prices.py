"""Price updates against the sandbox and the embedded PostgreSQL: validate, send, audit, reconcile."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

import tasks.prices as tasks_prices
from emag_sandbox.server import serve
from emag_sandbox.state import Faults, SandboxState
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.api.client import EmagClient
from emag_sync.cli import app
from emag_sync.errors import OfferNotPublishedError, PriceUpdateError
from emag_sync.prices import apply, rules
from emag_sync.prices.audit import Requester
from emag_sync.prices.results import PriceUpdateResult, result_rows
from emag_sync.schema import offers, price_updates
from emag_sync.settings import get_settings
from tests.price_helpers import (
    PRODUCTS,
    TESTER,
    audit_rows,
    client_for,
    make_request,
    offer_row,
    parse_price_csv,
    saves_sent,
    seed_offers,
    sync_account_once,
    valid_rows,
)

FBE, MAIN = legacy_account(AccountType.FBE), legacy_account(AccountType.MAIN)


# ---------------------------------------------------------------------------------------------- helpers


LIMIT = Decimal("0.30")


def run_one(engine, request: rules.PriceRequest, **kwargs) -> PriceUpdateResult:
    with apply.emag_writers(get_settings()) as writer_for:
        result = apply.run_single(engine, request, writer_for, TESTER, **kwargs)
    assert result is not None
    return result


# ---------------------------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "greater than 0"),
        ("-3", "greater than 0"),
        ("35.00001", "more than 4 decimals"),
        ("abc", "not a number"),
        ("NaN", "not a number"),
        (35.5, "not a float"),
    ],
)
def test_bad_prices_are_refused_naming_sku_account_and_field(value, expected):
    with pytest.raises(PriceUpdateError, match=expected) as caught:
        make_request("EMG469", "fbe", "35.00", max_price=value)
    assert "EMG469 on eMAG FBE" in str(caught.value) and "max_price" in str(caught.value)


def test_prices_stay_decimal_and_trailing_zeros_do_not_count_as_decimals():
    request = make_request(" EMG469 ", "FBE", "35.000000", min_price="", max_price=None)
    assert request == rules.PriceRequest("EMG469", FBE, Decimal("35.000000"))
    with pytest.raises(
        PriceUpdateError, match="account 'marketplace' is not registered \\(registered: fbe, main\\)"
    ):
        make_request("EMG469", "marketplace", "35")


def _stored(**changes) -> rules.StoredOffer:
    values = dict(
        row_id=1, sku="EMG469", account=FBE, emag_offer_id=200001405, sale_price=Decimal("118.0257"),
        min_sale_price=Decimal("79.21"), max_sale_price=Decimal("132.58"), recommended_price=None,
        currency="RON", vat_id=1, status=1, is_active=True,
    )  # fmt: skip
    return rules.StoredOffer(**(values | changes))


@pytest.mark.parametrize(
    ("request_args", "offer_changes", "expected"),
    [
        (("140",), {}, r"price 140 is outside the allowed range \[79.21, 132.58\] RON"),
        (("70",), {}, "outside the allowed range"),
        (("100", "120", "110"), {}, "min_price 120 must be lower than max_price 110"),
        (("100", None, "90"), {}, r"outside the allowed range \[79.21, 90\]"),
        (("100",), {"min_sale_price": None}, "no stored min_sale_price; give one in min_price"),
        (("120",), {"recommended_price": Decimal("119")}, "must be below the offer's recommended_price 119"),
    ],
)
def test_validation_refuses_what_emag_would(request_args, offer_changes, expected):
    request = make_request("EMG469", "fbe", *request_args, allow_large_change=True)
    with pytest.raises(PriceUpdateError, match=expected) as caught:
        rules.plan_update(request, _stored(**offer_changes), max_change=LIMIT)
    assert str(caught.value).startswith("EMG469 on eMAG FBE:")


def test_new_min_max_widen_the_range_and_only_prices_are_sent():
    plan = rules.plan_update(
        make_request("EMG469", "fbe", "150", max_price="200"), _stored(), max_change=LIMIT
    )
    assert plan.entity() == {"id": 200001405, "sale_price": "150.0000", "max_sale_price": "200.0000"}
    assert "stock" not in plan.entity()


def test_changes_show_vat_inclusive_price_for_display():
    request = make_request("EMG469", "fbe", "35.00", min_price="30", allow_large_change=True)
    plan = rules.plan_update(request, _stored(), max_change=LIMIT)
    rows = {name: (now, new) for name, now, new in rules.change_rows(plan)}
    assert rows["sale price (ex-VAT)"] == ("118.0257", "35.0000")
    assert rows["price incl. VAT 21%"] == ("142.81", "42.35")
    assert rows["min sale price"] == ("79.2100", "30.0000")
    assert rows["max sale price"] == ("132.5800", "132.5800")
    unknown = rules.plan_update(make_request("EMG469", "fbe", "100"), _stored(vat_id=9), max_change=LIMIT)
    assert any("vat_id 9: rate unknown" in name for name, _, _ in rules.change_rows(unknown))


# ---------------------------------------------------------------------------------------------- single update


def test_single_update_applies_on_emag_and_in_the_database_with_an_audit_row(sandbox, engine):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    before = offer_row(engine, "EMG469")

    shown = []
    result = run_one(engine, make_request("EMG469", "fbe", "100.50", min_price="80"), show=shown.append)

    assert result.status == "applied", result.message
    assert shown and shown[0].offer.sale_price == Decimal("118.0257")
    emag = state.record_by_sku(FBE, "EMG469")
    assert (emag["sale_price"], emag["min_sale_price"], emag["max_sale_price"]) == (
        "100.5000",
        "80.0000",
        "132.5800",
    )
    assert state.saves[-1].entity == {"id": 200001405, "sale_price": "100.5000", "min_sale_price": "80.0000"}
    after = offer_row(engine, "EMG469")
    assert (after["price"], after["sale_price"], after["min_sale_price"]) == (
        Decimal("100.5"),
        Decimal("100.5"),
        Decimal("80"),
    )
    assert after["max_sale_price"] == before["max_sale_price"]
    assert after["updated_at"] > before["updated_at"]
    [audit] = audit_rows(engine)
    assert audit["status"] == "applied" and audit["requested_by"] == "tester" and audit["source"] == "cli"
    # eMAG's answer arrived after the intent was committed; the offer row records when eMAG held the prices
    assert audit["emag_answer"] == "accepted" and audit["reread_found"] is None
    assert audit["sent_at"] <= audit["answered_at"] == after["prices_pushed_at"]
    assert before["prices_pushed_at"] is None and after["prices_pushed_at"].tzinfo is not None
    assert audit["sent_entity"] == {"id": 200001405, "sale_price": "100.5000", "min_sale_price": "80.0000"}
    assert audit["large_change_allowed"] is False
    assert (audit["sku"], audit["account_type"], audit["emag_offer_id"]) == ("EMG469", "fbe", 200001405)
    assert audit["old_sale_price"] == Decimal("118.0257") and audit["new_sale_price"] == Decimal("100.5")
    assert audit["old_min_sale_price"] == Decimal("79.21") and audit["new_min_sale_price"] == Decimal("80")
    assert audit["new_max_sale_price"] == Decimal("132.58") and audit["currency"] == "RON"
    assert audit["emag_response"]["isError"] is False
    assert len(saves_sent(state)) == 1


def test_database_failure_after_emag_applied_says_so_and_leaves_the_intent(sandbox, engine):
    """eMAG accepted the save, then the database refused the outcome: the operator is told it was sent
    (no blind retry), the offer row is not half-written, and the intent row stays for reconciliation."""
    from sqlalchemy import text

    state = sandbox.state
    seed_offers(engine, state, FBE)
    before = offer_row(engine, "EMG469")
    with engine.begin() as conn:  # intents can be written, outcomes cannot
        conn.execute(
            text(
                "CREATE FUNCTION app.refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$;"
                "CREATE TRIGGER refuse_outcome BEFORE UPDATE ON app.emag_price_updates "
                "FOR EACH ROW EXECUTE FUNCTION app.refuse_outcome()"
            )
        )

    result = run_one(engine, make_request("EMG469", "fbe", "100.50"))

    assert result.status == "uncertain"
    assert "sent to eMAG (its answer: accepted), but the outcome could not be written" in result.message
    assert "disk full (test)" in result.message and "stays 'sending'" in result.message
    assert state.record_by_sku(FBE, "EMG469")["sale_price"] == "100.5000"
    assert offer_row(engine, "EMG469") == before  # rolled back whole: no half-written row
    [audit] = audit_rows(engine)
    assert (audit["status"], audit["id"]) == ("sending", result.audit_id)


def test_a_following_sync_keeps_the_new_price(sandbox, engine):
    state = sandbox.state
    assert sync_account_once(engine, state, FBE).inserted == PRODUCTS
    assert run_one(engine, make_request("EMG470", "fbe", "280", max_price="420")).ok
    # The row's hash is cleared, so the next sync rewrites the row from eMAG instead of skipping it.
    assert offer_row(engine, "EMG470")["content_hash"] == ""

    result = sync_account_once(engine, state, FBE)

    assert result.updated == 1  # the updated offer is rewritten from eMAG's data, nothing else changed
    row = offer_row(engine, "EMG470")
    assert (row["price"], row["sale_price"], row["max_sale_price"]) == (
        Decimal("280"),
        Decimal("280"),
        Decimal("420"),
    )
    assert row["content_hash"] != ""


def test_out_of_range_price_is_refused_before_any_request(sandbox, engine):
    seed_offers(engine, sandbox.state, FBE)
    with pytest.raises(PriceUpdateError, match=r"EMG469 on eMAG FBE: price 35.00 is outside .*79.2100"):
        run_one(engine, make_request("EMG469", "fbe", "35.00", allow_large_change=True))
    assert saves_sent(sandbox.state) == []  # (one read: eMAG's current values, validated against)
    assert audit_rows(engine) == []
    assert offer_row(engine, "EMG469")["sale_price"] == Decimal("118.0257")


def test_stale_stored_ranges_are_validated_against_emags_current_ones(sandbox, engine):
    """Stored min/max wider than eMAG's: the current values read from eMAG refuse the price unsent."""
    seed_offers(engine, sandbox.state, FBE)
    with engine.begin() as conn:
        conn.execute(update(offers).where(offers.c.sku == "EMG470").values(max_sale_price=Decimal("1000")))
    with pytest.raises(
        PriceUpdateError, match=r"price 500 is outside the allowed range \[139.6600, 411.1600\]"
    ):
        run_one(engine, make_request("EMG470", "fbe", "500", allow_large_change=True))
    assert saves_sent(sandbox.state) == [] and audit_rows(engine) == []


def test_emag_refusal_leaves_the_database_unchanged_and_is_audited(sandbox, engine):
    """A price that passes here and eMAG refuses (its own reasons, e.g. a range changed meanwhile)."""
    state = sandbox.state
    seed_offers(engine, state, FBE)
    refusal = "Offer 200001408: sale_price 250.0000 is outside [139.6600, 240.0000]"
    state.set_faults(FBE, Faults(refuse_saves={200001408: refusal}))
    before = offer_row(engine, "EMG470")

    result = run_one(engine, make_request("EMG470", "fbe", "250"))

    assert result.status == "refused" and (result.answer, result.found) == ("refused", "old prices")
    assert refusal in result.message
    assert offer_row(engine, "EMG470") == before
    assert state.record_by_sku(FBE, "EMG470")["sale_price"] == "223.1100"
    [audit] = audit_rows(engine)
    assert audit["status"] == "refused"
    assert audit["emag_answer"] == "refused" and "outside" in audit["emag_messages"][0]
    assert (audit["reread_found"], audit["reread_source"]) == ("old prices", "save")
    assert audit["reread_prices"]["sale_price"] == "223.1100"
    assert audit["emag_response"]["isError"] is True
    assert "outside" in audit["emag_response"]["messages"][0]
    assert audit["emag_response"]["re_read"]["sale_price"] == "223.1100"


@pytest.mark.parametrize(
    ("sku", "change", "expected"),
    [
        ("EMG999", None, "EMG999 is not published on eMAG FBE (no such offer in the database"),
        (
            "EMG469",
            {"is_active": False},
            "EMG469 is not published on eMAG FBE (the last sync no longer found",
        ),
        ("EMG469", {"status": 0}, "EMG469 is not published on eMAG FBE (the offer is inactive on eMAG)"),
    ],
)
def test_unknown_or_unpublished_offer_is_refused_in_the_operators_terms(
    sandbox, engine, sku, change, expected
):
    seed_offers(engine, sandbox.state, FBE)
    if change:
        with engine.begin() as conn:
            conn.execute(update(offers).where(offers.c.sku == sku).values(**change))
    with pytest.raises(OfferNotPublishedError) as caught:
        run_one(engine, make_request(sku, "fbe", "100"))
    assert str(caught.value).startswith(expected)
    assert sandbox.state.request_log == []


class LostAnswerTransport(httpx.BaseTransport):
    """The network between us and the sandbox: offer/save answers are lost (optionally after delivery)."""

    def __init__(self, deliver: bool) -> None:
        self.inner = httpx.HTTPTransport()
        self.deliver = deliver

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/offer/save"):
            if self.deliver:
                self.inner.handle_request(request).close()
            raise httpx.ReadError("connection reset by peer", request=request)
        return self.inner.handle_request(request)


@pytest.mark.parametrize(
    ("delivered", "status", "found", "emag_holds"),
    [(True, "applied", "new prices", "280.0000"), (False, "uncertain", "old prices", "223.1100")],
)
def test_lost_answer_is_decided_by_what_the_re_read_finds(
    sandbox, engine, delivered, status, found, emag_holds
):
    seed_offers(engine, sandbox.state, FBE)
    request = make_request("EMG470", "fbe", "280")
    with client_for(FBE, LostAnswerTransport(deliver=delivered)) as client:
        result = apply.run_single(engine, request, lambda _: client, TESTER)

    assert result is not None and (result.status, result.answer, result.found) == (status, "no-answer", found)
    assert "the answer was lost" in result.message
    reads = [r for r in sandbox.state.request_log if (r.resource, r.action) == ("product_offer", "read")]
    assert len(reads) == 2  # the current values before, the re-read after
    row = offer_row(engine, "EMG470")
    assert row["sale_price"] == Decimal(emag_holds)
    [audit] = audit_rows(engine)
    assert audit["status"] == status and audit["new_sale_price"] == Decimal("280")
    assert audit["emag_answer"] == "no-answer" and audit["answered_at"] is None
    assert audit["reread_found"] == found and audit["reread_prices"]["sale_price"] == emag_holds
    assert "ReadError" in audit["emag_response"]["error"]
    # the re-read told us eMAG holds the new price: a sync page read before it must not take it back
    assert (row["prices_pushed_at"] == audit["reread_at"]) if delivered else row["prices_pushed_at"] is None


# ---------------------------------------------------------------------------------------------- bulk


def test_bulk_validates_every_line_and_sends_the_good_ones_in_chunks_of_50(sandbox, engine):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    seed_offers(engine, state, MAIN)
    good_fbe = valid_rows(state, FBE, 60)
    good_main = valid_rows(state, MAIN, 2)
    lines = ["sku,account,price"]
    lines += [f"{sku},fbe,{price}" for sku, price in good_fbe]
    lines += [f"{sku},main,{price}" for sku, price in good_main]
    lines += ["EMG469,fbe,140", "EMG999,fbe,10", "EMG470,fbe,abc", "EMG470,fbe", f"{good_main[0][0]},main,5"]
    parsed = parse_price_csv("\n".join(lines) + "\n")

    results = apply.run_bulk(engine, parsed.requests, prices_writers(), Requester("tester", "cli-bulk"))
    rows = result_rows(results, parsed.problems)

    by_line = {int(row["line"]): row for row in rows}
    assert len(rows) == 67
    applied = [*range(2, 62), 63]  # 60 FBE lines and the second MAIN line
    assert [n for n, row in sorted(by_line.items()) if row["status"] == "applied"] == applied
    assert {n: by_line[n]["status"] for n in (62, *range(64, 69))} == dict.fromkeys(
        (62, *range(64, 69)), "invalid"
    )
    assert "outside the allowed range" in by_line[64]["message"]
    assert "EMG999 is not published on eMAG FBE" in by_line[65]["message"]
    # 66 and 67 name the same SKU: each says what is wrong with it, and that it is listed twice
    assert by_line[66]["message"] == "price 'abc' is not a number; also listed on lines 66, 67"
    assert (
        by_line[67]["message"].startswith("missing price")
        and "listed on lines 66, 67" in by_line[67]["message"]
    )
    assert "listed on lines 62, 68" in by_line[68]["message"] and by_line[62]["status"] == "invalid"
    # 60 FBE rows: one full chunk of 50 and one of 10; one MAIN row
    assert len(saves_sent(state, FBE)) == 2 and len(saves_sent(state, MAIN)) == 1
    assert state.record_by_sku(FBE, good_fbe[59][0])["sale_price"] == good_fbe[59][1]
    assert offer_row(engine, good_fbe[0][0])["sale_price"] == Decimal(good_fbe[0][1])
    assert len(audit_rows(engine)) == 61 and {a["source"] for a in audit_rows(engine)} == {"cli-bulk"}
    assert offer_row(engine, "EMG469")["sale_price"] == Decimal("118.0257")


def prices_writers():
    """A writer_for backed by real clients from the environment (closed with the test's process)."""
    clients: dict[AccountType, EmagClient] = {}
    return lambda account: clients.setdefault(account, client_for(account))


class PartialSaveTransport(httpx.BaseTransport):
    """eMAG saving all but the first entity of a save and answering isError (its documented quirk)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/offer/save"):
            return self.inner.handle_request(request)
        entities = json.loads(request.content)["data"]
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        rest = httpx.Request("POST", request.url, headers=headers, json={"data": entities[1:]})
        self.inner.handle_request(rest).close()
        refusal = {"isError": True, "messages": [f"Offer id {entities[0]['id']}: refused"], "results": []}
        return httpx.Response(200, json=refusal, request=request)


def test_is_error_on_a_chunk_re_reads_each_offer_and_keeps_what_was_saved(sandbox, engine):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    rows = valid_rows(state, FBE, 3)
    requests = [make_request(sku, "fbe", price) for sku, price in rows]
    with client_for(FBE, PartialSaveTransport()) as client:
        results = apply.run_bulk(engine, requests, lambda _: client, Requester("t", "cli-bulk"))

    # eMAG refused the request but saved two of the three offers: the re-read settles those as applied
    assert [r.status for r in results] == ["refused", "applied", "applied"]
    assert [r.found for r in results] == ["old prices", "new prices", "new prices"]
    assert "eMAG refused: Offer id" in results[0].message
    assert "the re-read shows the new prices on eMAG" in results[1].message
    for (sku, price), result in zip(rows, results, strict=True):
        emag = state.record_by_sku(FBE, sku)["sale_price"]
        assert offer_row(engine, sku)["sale_price"] == Decimal(emag)
        assert (emag == price) == (result.status == "applied")
    assert [a["status"] for a in audit_rows(engine)] == ["refused", "applied", "applied"]
    assert all(a["emag_answer"] == "refused" for a in audit_rows(engine))


def test_price_updates_and_a_concurrent_read_share_the_accounts_rate_limit(engine, monkeypatch):
    """Sandbox rate limit on (3/s): a bulk update and a full read of the same account, 0 answers 429."""
    state = SandboxState(products=PRODUCTS, rate_limit=True)
    with serve(state) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        seed_offers(engine, state, FBE)
        requests = [make_request(sku, "fbe", p) for sku, p in valid_rows(state, FBE, 150)]
        outcome: dict[str, object] = {}

        def update() -> None:
            with apply.emag_writers(get_settings()) as writer_for:
                outcome["results"] = apply.run_bulk(engine, requests, writer_for, Requester("t", "cli-bulk"))

        def read() -> None:
            with client_for(FBE) as client:
                outcome["records"] = sum(len(page.records) for page in client.iter_pages())
                outcome["stats"] = client.stats.counters()

        threads = [threading.Thread(target=update), threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    assert outcome["records"] == PRODUCTS
    assert [r.status for r in outcome["results"]] == ["applied"] * 150
    statuses = [r.status_code for r in state.request_log]
    assert len(saves_sent(state)) == 3 and len(statuses) >= 8
    assert 429 not in statuses


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_single_and_bulk(sandbox, engine, db_env, tmp_path):
    seed_offers(engine, sandbox.state, FBE)
    runner = CliRunner()

    ok = runner.invoke(app, ["update-price", "--sku", "EMG469", "--account", "fbe", "--price", "100.50"])
    assert ok.exit_code == 0, ok.output
    assert "118.0257" in ok.stdout and "100.5000" in ok.stdout and "incl. VAT 11%" in ok.stdout
    assert "applied on eMAG and in the database" in ok.stdout
    assert audit_rows(engine)[-1]["source"] == "cli"

    sent = len(saves_sent(sandbox.state))
    dry = runner.invoke(
        app, ["update-price", "--sku", "EMG470", "--account", "fbe", "--price", "250", "--dry-run"]
    )
    assert dry.exit_code == 0 and "valid; nothing sent (--dry-run)" in dry.stdout
    assert len(saves_sent(sandbox.state)) == sent

    refused = runner.invoke(
        app, ["update-price", "--sku", "EMG469", "--account", "fbe", "--price", "125", "--max-price", "120"]
    )
    assert refused.exit_code == 1
    assert "EMG469 on eMAG FBE: price 125 is outside the allowed range" in refused.stderr
    assert "pass --min-price/--max-price" in refused.stderr

    missing = runner.invoke(app, ["update-price", "--sku", "EMG9999", "--account", "fbe", "--price", "10"])
    assert missing.exit_code == 1 and "EMG9999 is not published on eMAG FBE" in missing.stderr

    csv_file = tmp_path / "prices.csv"
    csv_file.write_text("sku,account,price\nEMG470,fbe,250\nEMG469,fbe,x\n", encoding="utf-8")
    bulk = runner.invoke(app, ["update-price", "--file", str(csv_file)], terminal_width=200)
    assert bulk.exit_code == 1
    assert "1 applied, 1 invalid" in bulk.stdout
    assert sandbox.state.record_by_sku(FBE, "EMG470")["sale_price"] == "250.0000"
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(price_updates)) == 2

    both = runner.invoke(app, ["update-price", "--file", str(csv_file), "--sku", "EMG1"])
    assert both.exit_code == 1 and "not both" in both.stderr


# ---------------------------------------------------------------------------------------------- flows


@pytest.mark.flow
def test_flows_update_prices_and_publish_the_result_table(prefect_harness, sandbox, engine, db_env):
    from prefect.artifacts import Artifact
    from prefect.exceptions import FailedRun

    from flows.update_price import emag_update_offer_price, emag_update_offer_prices_bulk

    seed_offers(engine, sandbox.state, FBE)

    row = emag_update_offer_price(sku="EMG469", account="fbe", price="99.90")
    assert (row["status"], row["new price"]) == ("applied", "99.9000")
    [audit] = audit_rows(engine)
    assert audit["source"] == "flow" and audit["requested_by"].startswith("prefect:") and audit["flow_run_id"]
    assert sandbox.state.record_by_sku(FBE, "EMG469")["sale_price"] == "99.9000"

    with pytest.raises(FailedRun, match="2 of 3 price update line"):
        emag_update_offer_prices_bulk(
            csv_text="sku,account,price\nEMG470,fbe,250\nEMG469,fbe,0\nKIT[/2],fbe,10\n"
        )
    assert sandbox.state.record_by_sku(FBE, "EMG470")["sale_price"] == "250.0000"
    artifact = Artifact.get(tasks_prices.ARTIFACT_KEY)
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [(r["line"], r["sku"], r["status"]) for r in table] == [
        ("2", "EMG470", "applied"),
        ("3", "EMG469", "invalid"),
        ("4", r"KIT\[\/2\]", "invalid"),  # the UI renders cells as markdown: text is escaped
    ]
    assert "1 applied, 2 invalid" in artifact.description
