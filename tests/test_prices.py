"""Price updates against the sandbox and the embedded PostgreSQL: validate, send, audit, reconcile."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, insert, select, update
from typer.testing import CliRunner

import tasks.prices as tasks_prices
from emag_sandbox.server import serve
from emag_sandbox.state import SandboxState
from emag_sync.accounts import AccountType
from emag_sync.api import open_client
from emag_sync.api.client import EmagClient
from emag_sync.cli import app
from emag_sync.errors import OfferNotPublishedError, PriceUpdateError
from emag_sync.prices import apply, csv_input, rules
from emag_sync.schema import offers, price_updates, products
from emag_sync.settings import get_settings

FBE, MAIN = AccountType.FBE, AccountType.MAIN
PRODUCTS = 500  # FBE holds EMG469 (range 79.21..132.58, recommended 164.63) and EMG470 (139.66..411.16)


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def sandbox(monkeypatch):
    """A small sandbox on a loopback port (rate limit off), with the environment pointing at it."""
    state = SandboxState(products=PRODUCTS, rate_limit=False)
    with serve(state) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


def seed_offers(engine, state: SandboxState, account: AccountType) -> None:
    """Product and offer rows for every sandbox record of the account, as a sync would leave them."""
    records = [r for r in state.catalogue_records(account) if r.get("part_number")]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(products),
            [
                {
                    "sku": r["part_number"],
                    "account_type": account.value,
                    "emag_id": r["id"],
                    "raw_emag_data": {},
                    "content_hash": "seed",
                    "last_synced_at": now,
                }
                for r in records
            ],
        )
        product_ids = dict(
            conn.execute(
                select(products.c.sku, products.c.id).where(products.c.account_type == account.value)
            )
            .tuples()
            .all()
        )
        conn.execute(
            insert(offers),
            [
                {
                    "product_id": product_ids[r["part_number"]],
                    "sku": r["part_number"],
                    "account_type": account.value,
                    "emag_offer_id": r["id"],
                    "price": r["sale_price"],
                    "sale_price": r["sale_price"],
                    "recommended_price": r["recommended_price"],
                    "min_sale_price": r["min_sale_price"],
                    "max_sale_price": r["max_sale_price"],
                    "currency": r["currency"],
                    "vat_id": r["vat_id"],
                    "status": r["status"],
                    "content_hash": "seed",
                    "last_synced_at": now,
                }
                for r in records
            ],
        )


def offer_row(engine, sku: str, account: AccountType = FBE) -> dict:
    with engine.connect() as conn:
        row = conn.execute(
            select(offers).where(offers.c.sku == sku, offers.c.account_type == account.value)
        ).mappings()
        return dict(row.one())


def audit_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(price_updates).order_by(price_updates.c.id)).mappings()]


def saves_sent(state: SandboxState, account: AccountType | None = None) -> list:
    return [
        r
        for r in state.request_log
        if (r.resource, r.action) == ("offer", "save") and (account is None or r.account is account)
    ]


def run_one(engine, request: rules.PriceRequest, **kwargs) -> apply.PriceUpdateResult:
    with apply.emag_writers(get_settings()) as writer_for:
        result = apply.run_single(engine, request, writer_for, requested_by="tester", source="cli", **kwargs)
    assert result is not None
    return result


def client_for(account: AccountType, transport: httpx.BaseTransport | None = None) -> EmagClient:
    return open_client(get_settings(), account, transport=transport)


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
        rules.make_request("EMG469", "fbe", "35.00", max_price=value)
    assert "EMG469 on eMAG FBE" in str(caught.value) and "max_price" in str(caught.value)


def test_prices_stay_decimal_and_trailing_zeros_do_not_count_as_decimals():
    request = rules.make_request(" EMG469 ", "FBE", "35.000000", min_price="", max_price=None)
    assert request == rules.PriceRequest("EMG469", FBE, Decimal("35.000000"))
    with pytest.raises(PriceUpdateError, match="account must be main or fbe"):
        rules.make_request("EMG469", "marketplace", "35")


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
        (("100",), {"min_sale_price": None}, "no stored min_sale_price; give one with --min-price"),
        (("120",), {"recommended_price": Decimal("119")}, "must be below the offer's recommended_price 119"),
    ],
)
def test_validation_refuses_what_emag_would(request_args, offer_changes, expected):
    request = rules.make_request("EMG469", "fbe", *request_args)
    with pytest.raises(PriceUpdateError, match=expected) as caught:
        rules.plan_update(request, _stored(**offer_changes))
    assert str(caught.value).startswith("EMG469 on eMAG FBE:")


def test_new_min_max_widen_the_range_and_only_prices_are_sent():
    plan = rules.plan_update(rules.make_request("EMG469", "fbe", "150", max_price="200"), _stored())
    assert plan.entity() == {"id": 200001405, "sale_price": "150.0000", "max_sale_price": "200.0000"}
    assert "stock" not in plan.entity()


def test_changes_show_vat_inclusive_price_for_display():
    plan = rules.plan_update(rules.make_request("EMG469", "fbe", "35.00", min_price="30"), _stored())
    rows = {name: (now, new) for name, now, new in rules.change_rows(plan)}
    assert rows["sale price (ex-VAT)"] == ("118.0257", "35.0000")
    assert rows["price incl. VAT 21%"] == ("142.81", "42.35")
    assert rows["min sale price"] == ("79.2100", "30.0000")
    assert rows["max sale price"] == ("132.5800", "132.5800")
    unknown = rules.plan_update(rules.make_request("EMG469", "fbe", "100"), _stored(vat_id=9))
    assert any("vat_id 9: rate unknown" in name for name, _, _ in rules.change_rows(unknown))


def test_csv_problems_are_reported_by_line_number():
    text = (
        "sku,account,price,min_price,max_price\n"
        "EMG1,fbe,10.5,,\n"  # 2: fine
        "EMG2,fbe\n"  # 3: missing columns
        "EMG3,fbe,1O.5,,\n"  # 4: bad number
        "EMG4,amazon,10,,\n"  # 5: unknown account
        "EMG5,fbe,10,,\n"  # 6: duplicate with 8
        "\n"  # 7: blank, skipped
        "EMG5,FBE,11,,\n"  # 8
        "EMG5,main,12,,\n"  # 9: same SKU, other account: fine
        "EMG6,fbe,10.12345,,\n"  # 10: too many decimals
    )
    parsed = csv_input.parse_price_csv(text)
    assert [(r.sku, r.account, r.line) for r in parsed.requests] == [("EMG1", FBE, 2), ("EMG5", MAIN, 9)]
    problems = {p.line: p.message for p in parsed.problems}
    assert sorted(problems) == [3, 4, 5, 6, 8, 10]
    assert "expected 5 columns" in problems[3]
    assert problems[4] == "line 4: EMG3 on eMAG FBE: price '1O.5' is not a number"
    assert "account must be main or fbe" in problems[5]
    assert "listed on lines 6, 8" in problems[6] and "listed on lines 6, 8" in problems[8]
    assert "more than 4 decimals" in problems[10]


def test_csv_header_must_name_the_required_columns():
    parsed = csv_input.parse_price_csv("sku,price,colour\nEMG1,10,red\n")
    assert not parsed.requests
    assert parsed.problems[0].line == 1
    assert "missing column(s) account" in parsed.problems[0].message
    assert "unknown column(s) colour" in parsed.problems[0].message


# ---------------------------------------------------------------------------------------------- single update


def test_single_update_applies_on_emag_and_in_the_database_with_an_audit_row(sandbox, engine):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    before = offer_row(engine, "EMG469")

    shown = []
    result = run_one(engine, rules.make_request("EMG469", "fbe", "100.50", min_price="80"), show=shown.append)

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
    assert (audit["sku"], audit["account_type"], audit["emag_offer_id"]) == ("EMG469", "fbe", 200001405)
    assert audit["old_sale_price"] == Decimal("118.0257") and audit["new_sale_price"] == Decimal("100.5")
    assert audit["old_min_sale_price"] == Decimal("79.21") and audit["new_min_sale_price"] == Decimal("80")
    assert audit["new_max_sale_price"] == Decimal("132.58") and audit["currency"] == "RON"
    assert audit["emag_response"]["isError"] is False
    assert len(saves_sent(state)) == 1


def test_database_failure_after_emag_applied_says_so_and_leaves_the_row_alone(sandbox, engine):
    """eMAG accepted the save, then the database refused the write: the operator is told it is live on
    eMAG but not recorded (no blind retry), nothing half-written stays, and the error names the cause."""
    from sqlalchemy import text

    state = sandbox.state
    seed_offers(engine, state, FBE)
    before = offer_row(engine, "EMG469")
    with engine.begin() as conn:  # the audit table gone: the chunk's transaction cannot commit
        conn.execute(text("ALTER TABLE app.emag_price_updates RENAME TO emag_price_updates_gone"))

    result = run_one(engine, rules.make_request("EMG469", "fbe", "100.50"))

    assert result.status == "uncertain"
    assert "applied on eMAG, but the database and audit could not be written" in result.message
    assert "emag_price_updates" in result.message and "a sync of fbe will record" in result.message
    assert state.record_by_sku(FBE, "EMG469")["sale_price"] == "100.5000"
    assert offer_row(engine, "EMG469") == before  # rolled back whole: no half-written row


def sync_account_once(engine, state: SandboxState, account: AccountType):
    """What a sync's load does with the account's current catalogue: one run, one batch."""
    from emag_sync.schema import sync_runs
    from tasks.load import load_batch
    from tasks.transform import transform_batch

    with engine.begin() as conn:
        run_id = conn.execute(
            insert(sync_runs)
            .values(account_type=account.value, status="running", items_per_page=100, pages_per_batch=5)
            .returning(sync_runs.c.id)
        ).scalar_one()
    frames = transform_batch(state.catalogue_records(account), account, pages=1, synced_at=datetime.now(UTC))
    return load_batch(engine, run_id, account, frames, last_page=1)


def test_a_following_sync_keeps_the_new_price(sandbox, engine):
    state = sandbox.state
    assert sync_account_once(engine, state, FBE).inserted == PRODUCTS
    assert run_one(engine, rules.make_request("EMG470", "fbe", "300", max_price="420")).ok
    # The row's hash is cleared, so the next sync rewrites the row from eMAG instead of skipping it.
    assert offer_row(engine, "EMG470")["content_hash"] == ""

    result = sync_account_once(engine, state, FBE)

    assert result.updated == 1  # the updated offer is rewritten from eMAG's data, nothing else changed
    row = offer_row(engine, "EMG470")
    assert (row["price"], row["sale_price"], row["max_sale_price"]) == (
        Decimal("300"),
        Decimal("300"),
        Decimal("420"),
    )
    assert row["content_hash"] != ""


def test_out_of_range_price_is_refused_before_any_request(sandbox, engine):
    seed_offers(engine, sandbox.state, FBE)
    with pytest.raises(PriceUpdateError, match=r"EMG469 on eMAG FBE: price 35.00 is outside .*79.2100"):
        run_one(engine, rules.make_request("EMG469", "fbe", "35.00"))
    assert sandbox.state.request_log == []
    assert audit_rows(engine) == []
    assert offer_row(engine, "EMG469")["sale_price"] == Decimal("118.0257")


def test_emag_refusal_leaves_the_database_unchanged_and_is_audited(sandbox, engine):
    """Stored min/max are stale (wider than eMAG's): the price passes here and eMAG refuses it."""
    state = sandbox.state
    seed_offers(engine, state, FBE)
    with engine.begin() as conn:
        conn.execute(update(offers).where(offers.c.sku == "EMG470").values(max_sale_price=Decimal("1000")))
    before = offer_row(engine, "EMG470")

    result = run_one(engine, rules.make_request("EMG470", "fbe", "500"))

    assert result.status == "refused"
    assert "sale_price 500.0000 is outside" in result.message and "max_sale_price 411.1600" in result.message
    assert offer_row(engine, "EMG470") == before
    assert state.record_by_sku(FBE, "EMG470")["sale_price"] == "223.1100"
    [audit] = audit_rows(engine)
    assert audit["status"] == "refused"
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
        run_one(engine, rules.make_request(sku, "fbe", "100"))
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


@pytest.mark.parametrize(("delivered", "emag_holds"), [(True, "300.0000"), (False, "223.1100")])
def test_lost_answer_is_uncertain_and_records_what_emag_holds(sandbox, engine, delivered, emag_holds):
    seed_offers(engine, sandbox.state, FBE)
    request = rules.make_request("EMG470", "fbe", "300")
    with client_for(FBE, LostAnswerTransport(deliver=delivered)) as client:
        result = apply.run_single(engine, request, lambda _: client, requested_by="tester", source="cli")

    assert result is not None and result.status == "uncertain"
    assert f"eMAG now holds sale_price {emag_holds} RON" in result.message
    reads = [r for r in sandbox.state.request_log if (r.resource, r.action) == ("product_offer", "read")]
    assert len(reads) == 1  # the re-read
    assert offer_row(engine, "EMG470")["sale_price"] == Decimal(emag_holds)
    [audit] = audit_rows(engine)
    assert audit["status"] == "uncertain" and audit["new_sale_price"] == Decimal("300")
    assert audit["emag_response"]["re_read"]["sale_price"] == emag_holds
    assert "ReadError" in audit["emag_response"]["error"]


# ---------------------------------------------------------------------------------------------- bulk


def _valid_rows(state: SandboxState, account: AccountType, n: int) -> list[tuple[str, str]]:
    """(sku, new price) for n published offers: their min price, always allowed and a change."""
    rows = []
    for record in state.catalogue_records(account):
        if record["status"] == 1 and record["sale_price"] != record["min_sale_price"]:
            rows.append((record["part_number"], record["min_sale_price"]))
        if len(rows) == n:
            return rows
    raise AssertionError("not enough published offers in the sandbox")


def test_bulk_validates_every_line_and_sends_the_good_ones_in_chunks_of_50(sandbox, engine):
    state = sandbox.state
    seed_offers(engine, state, FBE)
    seed_offers(engine, state, MAIN)
    good_fbe = _valid_rows(state, FBE, 60)
    good_main = _valid_rows(state, MAIN, 2)
    lines = ["sku,account,price"]
    lines += [f"{sku},fbe,{price}" for sku, price in good_fbe]
    lines += [f"{sku},main,{price}" for sku, price in good_main]
    lines += ["EMG469,fbe,999", "EMG999,fbe,10", "EMG470,fbe,abc", "EMG470,fbe", f"{good_main[0][0]},main,5"]
    parsed = csv_input.parse_price_csv("\n".join(lines) + "\n")

    results = apply.run_bulk(
        engine, parsed.requests, prices_writers(), requested_by="tester", source="cli-bulk"
    )
    rows = apply.result_rows(results, parsed.problems)

    by_line = {int(row["line"]): row for row in rows}
    assert len(rows) == 67
    applied = [*range(2, 62), 63]  # 60 FBE lines and the second MAIN line
    assert [n for n, row in sorted(by_line.items()) if row["status"] == "applied"] == applied
    assert {n: by_line[n]["status"] for n in (62, *range(64, 69))} == dict.fromkeys(
        (62, *range(64, 69)), "invalid"
    )
    assert "outside the allowed range" in by_line[64]["message"]
    assert "EMG999 is not published on eMAG FBE" in by_line[65]["message"]
    assert "not a number" in by_line[66]["message"] and "expected 3 columns" in by_line[67]["message"]
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
    rows = _valid_rows(state, FBE, 3)
    requests = [rules.make_request(sku, "fbe", price) for sku, price in rows]
    with client_for(FBE, PartialSaveTransport()) as client:
        results = apply.run_bulk(engine, requests, lambda _: client, requested_by="t", source="cli-bulk")

    assert [r.status for r in results] == ["refused", "applied", "applied"]
    assert "eMAG refused: Offer id" in results[0].message
    for (sku, price), result in zip(rows, results, strict=True):
        emag = state.record_by_sku(FBE, sku)["sale_price"]
        assert offer_row(engine, sku)["sale_price"] == Decimal(emag)
        assert (emag == price) == (result.status == "applied")
    assert [a["status"] for a in audit_rows(engine)] == ["refused", "applied", "applied"]


def test_price_updates_and_a_concurrent_read_share_the_accounts_rate_limit(engine, monkeypatch):
    """Sandbox rate limit on (3/s): a bulk update and a full read of the same account, 0 answers 429."""
    state = SandboxState(products=PRODUCTS, rate_limit=True)
    with serve(state) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        seed_offers(engine, state, FBE)
        requests = [rules.make_request(sku, "fbe", p) for sku, p in _valid_rows(state, FBE, 150)]
        outcome: dict[str, object] = {}

        def update() -> None:
            with apply.emag_writers(get_settings()) as writer_for:
                outcome["results"] = apply.run_bulk(
                    engine, requests, writer_for, requested_by="t", source="cli-bulk"
                )

        def read() -> None:
            with client_for(FBE) as client:
                outcome["records"] = sum(len(page.records) for page in client.iter_pages())
                outcome["stats"] = client.stats.snapshot()

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
        app, ["update-price", "--sku", "EMG470", "--account", "fbe", "--price", "300", "--dry-run"]
    )
    assert dry.exit_code == 0 and "valid; nothing sent (--dry-run)" in dry.stdout
    assert len(saves_sent(sandbox.state)) == sent

    refused = runner.invoke(app, ["update-price", "--sku", "EMG469", "--account", "fbe", "--price", "1000"])
    assert refused.exit_code == 1
    assert "EMG469 on eMAG FBE: price 1000 is outside the allowed range" in refused.stderr

    missing = runner.invoke(app, ["update-price", "--sku", "EMG9999", "--account", "fbe", "--price", "10"])
    assert missing.exit_code == 1 and "EMG9999 is not published on eMAG FBE" in missing.stderr

    csv_file = tmp_path / "prices.csv"
    csv_file.write_text("sku,account,price\nEMG470,fbe,300\nEMG469,fbe,x\n", encoding="utf-8")
    bulk = runner.invoke(app, ["update-price", "--file", str(csv_file)], terminal_width=200)
    assert bulk.exit_code == 1
    assert "1 applied, 1 invalid" in bulk.stdout
    assert sandbox.state.record_by_sku(FBE, "EMG470")["sale_price"] == "300.0000"
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

    with pytest.raises(FailedRun, match="1 of 2 price update line"):
        emag_update_offer_prices_bulk(csv_text="sku,account,price\nEMG470,fbe,250\nEMG469,fbe,0\n")
    assert sandbox.state.record_by_sku(FBE, "EMG470")["sale_price"] == "250.0000"
    artifact = Artifact.get(tasks_prices.ARTIFACT_KEY)
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [(r["line"], r["sku"], r["status"]) for r in table] == [
        ("2", "EMG470", "applied"),
        ("3", "EMG469", "invalid"),
    ]
    assert "1 applied, 1 invalid" in artifact.description
