"""The eMAG sandbox: behaviour the pipeline relies on, in-process and over a loopback port."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from emag_sandbox.accounts import SandboxAccount, parse_account
from emag_sandbox.app import create_app
from emag_sandbox.catalogue import Catalogue
from emag_sandbox.state import (
    FAULT_FIELDS,
    MAX_ENTITIES_PER_SAVE,
    MAX_ITEMS_PER_PAGE,
    RATE_LIMIT_MESSAGE,
    Faults,
    SandboxState,
    UnknownAccountError,
)
from emag_sync.accounts import AccountType

MAIN, FBE = AccountType.MAIN, AccountType.FBE
PRICE = re.compile(r"^\d+\.\d{4}$")


def client_for(state: SandboxState) -> TestClient:
    return TestClient(create_app(state), base_url="http://sandbox")


def call(
    client: TestClient | httpx.Client,
    state: SandboxState,
    account: AccountType,
    endpoint: str,
    data: Any = None,
    *,
    wrap: bool = True,
) -> httpx.Response:
    body = {"data": data if data is not None else {}} if wrap else data
    return client.post(f"/api-3/{endpoint}", json=body, auth=state.credentials[account])


def results(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["isError"] is False, body
    return body["results"]


def refusal(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["isError"] is True, body
    return list(body["messages"])


@pytest.fixture
def client(sandbox_state: SandboxState) -> TestClient:
    return client_for(sandbox_state)


# --- auth, envelope, paging -------------------------------------------------------------------------
def test_missing_or_wrong_credentials_answer_401(sandbox_state: SandboxState, client: TestClient) -> None:
    main_user, main_password = sandbox_state.credentials[MAIN]
    fbe_user, _ = sandbox_state.credentials[FBE]
    for auth in (None, (main_user, "wrong"), (fbe_user, main_password)):
        response = client.post("/api-3/product_offer/read", json={"data": {}}, auth=auth)
        assert response.status_code == 401
        assert response.json()["isError"] is True
    assert [r.status_code for r in sandbox_state.request_log] == [401, 401, 401]
    assert {r.account for r in sandbox_state.request_log} == {None}


def test_count_answers_strings_like_emag() -> None:
    state = SandboxState(rate_limit=False)
    client = client_for(state)
    assert results(call(client, state, FBE, "product_offer/count")) == {
        "noOfItems": "2550",
        "noOfPages": "26",
        "itemsPerPage": "100",
    }
    main = results(call(client, state, MAIN, "product_offer/count", {"itemsPerPage": 50}))
    assert main == {"noOfItems": "2168", "noOfPages": "44", "itemsPerPage": "50"}


def test_paging_ends_with_a_short_page_then_an_empty_one(
    sandbox_state: SandboxState, client: TestClient
) -> None:
    sizes, ids = [], []
    for page in range(1, 5):
        records = results(call(client, sandbox_state, FBE, "product_offer/read", {"currentPage": page}))
        sizes.append(len(records))
        ids += [r["id"] for r in records]
    assert sizes == [100, 100, 50, 0]
    assert len(set(ids)) == 250
    assert [r.page for r in sandbox_state.request_log] == [1, 2, 3, 4]


def test_data_wrapped_and_bare_bodies_read_the_same(sandbox_state: SandboxState, client: TestClient) -> None:
    query = {"currentPage": "2", "itemsPerPage": "10"}  # eMAG clients also send numbers as strings
    wrapped = results(call(client, sandbox_state, MAIN, "product_offer/read", query))
    bare = results(call(client, sandbox_state, MAIN, "product_offer/read", query, wrap=False))
    assert wrapped == bare
    assert [r["id"] for r in wrapped] == [sandbox_state.catalogues[MAIN].id_of(i) for i in range(10, 20)]


def test_bad_paging_and_bad_json_are_refused_with_is_error(
    sandbox_state: SandboxState, client: TestClient
) -> None:
    assert (
        "at most 100"
        in refusal(call(client, sandbox_state, FBE, "product_offer/read", {"itemsPerPage": 101}))[0]
    )
    assert refusal(call(client, sandbox_state, FBE, "product_offer/read", {"currentPage": 0}))
    bad = client.post("/api-3/product_offer/read", content=b"{not json", auth=sandbox_state.credentials[FBE])
    assert refusal(bad) == ["The request body is not valid JSON"]
    unknown = call(client, sandbox_state, FBE, "product/frobnicate")
    assert unknown.status_code == 404 and unknown.json()["isError"] is True
    assert client.get("/api-3/product_offer/read", auth=sandbox_state.credentials[FBE]).status_code == 405


def test_filters_id_part_number_and_status(sandbox_state: SandboxState, client: TestClient) -> None:
    everything = sandbox_state.catalogue_records(FBE)
    target = everything[42]
    by_id = results(call(client, sandbox_state, FBE, "product_offer/read", {"id": target["id"]}))
    by_sku = results(
        call(client, sandbox_state, FBE, "product_offer/read", {"part_number": target["part_number"]})
    )
    assert [r["id"] for r in by_id] == [r["id"] for r in by_sku] == [target["id"]]
    # GPSR fields: completion flags in list reads, details when filtered to one product
    assert isinstance(target["manufacturer"], bool) and isinstance(by_id[0]["manufacturer"], list)
    inactive = [r["id"] for r in everything if r["status"] == 0]
    read = results(call(client, sandbox_state, FBE, "product_offer/read", {"status": 0}))
    assert inactive and [r["id"] for r in read] == inactive
    count = results(call(client, sandbox_state, FBE, "product_offer/count", {"status": 0}))
    assert count["noOfItems"] == str(len(inactive))
    assert results(call(client, sandbox_state, FBE, "product_offer/read", {"part_number": "NOPE"})) == []


# --- the catalogue ----------------------------------------------------------------------------------
def test_catalogue_is_deterministic_and_shares_skus_with_different_ids() -> None:
    first, second, other = SandboxState(), SandboxState(), SandboxState(seed=8)
    assert first.read(FBE, {"currentPage": 9}) == second.read(FBE, {"currentPage": 9})
    assert first.read(FBE, {"currentPage": 9}) != other.read(FBE, {"currentPage": 9})
    fbe = {r["part_number"]: r for r in first.catalogue_records(FBE)}
    main = {r["part_number"]: r for r in first.catalogue_records(MAIN)}
    assert len(fbe) == 2550 and len(main) == 2168
    assert {"EMG469", "EMG470"} <= fbe.keys()
    shared = fbe.keys() & main.keys()
    assert len(shared) > 500
    for sku in shared:
        assert fbe[sku]["id"] != main[sku]["id"]
        assert fbe[sku]["part_number_key"] == main[sku]["part_number_key"]  # the same eMAG product
    assert not {r["id"] for r in fbe.values()} & {r["id"] for r in main.values()}


def test_records_carry_the_observed_quirks() -> None:
    records = SandboxState().catalogue_records(FBE)
    for record in records:
        sale, low, high = (Decimal(record[k]) for k in ("sale_price", "min_sale_price", "max_sale_price"))
        assert all(PRICE.match(record[k]) for k in ("sale_price", "min_sale_price", "max_sale_price"))
        assert 0 < low <= sale <= high
        assert record["recommended_price"] is None or Decimal(record["recommended_price"]) > sale
        assert 0 <= record["estimated_stock"] <= record["general_stock"]
        assert record["status"] in (0, 1, 2) and record["currency"] == "RON"
        assert isinstance(record["validation_status"], list)
        assert set(record["validation_status"][0]) == {"value", "description", "errors"}
        assert isinstance(record["translation_validation_status"], list)
        assert set(record["offer_validation_status"]) == {"value", "description"}
        assert isinstance(record["manufacturer"], bool) and isinstance(record["eu_representative"], bool)
        assert record["images"] and record["handling_time"] and isinstance(record["vat_id"], int)
    assert any(r["recommended_price"] is None for r in records)
    assert any(r["family"] is None for r in records) and any(r["family"] for r in records)
    assert any(r["url"] == "" for r in records)
    assert any(r["ownership"] is True for r in records)
    assert any("warehouse_id" not in r["stock"][0] for r in records)
    assert any(r["stock"][0] == {"warehouse_id": 1, "value": r["general_stock"]} for r in records)
    assert any(not re.fullmatch(r"\d{6,14}", ean) for r in records for ean in r["ean"])
    assert {r["status"] for r in records} == {0, 1, 2}


@pytest.mark.parametrize(
    ("platform", "currency"), [("bg", "EUR"), ("hu", "HUF"), ("fd-bg", "EUR"), ("fd-ro", "RON")]
)
def test_platform_sets_the_currency(platform: str, currency: str) -> None:
    """The platform's currency today: Bulgaria's platforms price in EUR since 2026-01-01."""
    records = SandboxState(products=20, platform=platform).catalogue_records(MAIN)
    assert {r["currency"] for r in records} == {currency}
    if platform == "hu":
        assert all(r["sale_price"].endswith(".0000") for r in records)


def test_catalogue_identity_maps_back_to_the_record() -> None:
    catalogue = Catalogue(MAIN, 300, seed=3)
    for index in (0, 3, 4, 299):
        record = catalogue.record(index)
        assert catalogue.index_of_id(record["id"]) == index
        assert catalogue.index_of_sku(record["part_number"]) == index
        assert catalogue.index_of_pnk(record["part_number_key"]) == index
    assert catalogue.index_of_id(catalogue.id_of(300)) is None
    assert catalogue.index_of_sku("EMG1") is None  # MAIN's first product is its own SKU


def test_a_200k_record_state_is_created_lazily_and_reads_its_last_page() -> None:
    state = SandboxState(products=200_000, main_products=200_000, rate_limit=False)
    client = client_for(state)
    assert results(call(client, state, MAIN, "product_offer/count"))["noOfPages"] == "2000"
    last = results(call(client, state, FBE, "product_offer/read", {"currentPage": 2000}))
    assert len(last) == 100 and last[-1]["part_number"] == "EMG200000"
    assert results(call(client, state, FBE, "product_offer/read", {"currentPage": 2001})) == []
    removed = state.remove_records(FBE, 3)
    last = results(call(client, state, FBE, "product_offer/read", {"currentPage": 2000}))
    assert len(last) == 97 and not {r["id"] for r in last} & set(removed)


# --- rate limit -------------------------------------------------------------------------------------
def test_sliding_window_allows_n_per_second_and_never_more() -> None:
    state = SandboxState(products=10)
    gates = [state.gate(FBE, now=t).status_code for t in (100.0, 100.1, 100.2, 100.3, 100.99)]
    assert gates == [None, None, None, 429, 429]
    assert state.gate(FBE, now=101.0).status_code is None  # the call at 100.0 left the window
    assert state.gate(FBE, now=101.05).status_code == 429
    assert state.gate(MAIN, now=100.3).status_code is None  # each account has its own budget
    # concurrent requests can be stamped out of order: every window around the arrival is checked
    assert [state.gate(MAIN, now=t).status_code for t in (100.9, 100.5, 100.35, 101.31)] == [
        None,
        None,
        429,
        None,
    ]
    minute = SandboxState(products=10, requests_per_second=1000, per_minute=180)
    assert [minute.gate(FBE, now=i / 100).status_code for i in range(181)].count(429) == 1


def test_exceeding_3_per_second_answers_emag_429(client: TestClient, sandbox_state: SandboxState) -> None:
    sandbox_state.rate_limit = True
    answers = [call(client, sandbox_state, FBE, "product_offer/read", {"itemsPerPage": 1}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["X-RateLimit-Remaining-3second"] for a in answers] == ["2", "1", "0"]
    limited = call(client, sandbox_state, FBE, "offer/save", [{"id": 1}])  # writes share the budget
    assert limited.status_code == 429
    assert limited.json() == {"message": RATE_LIMIT_MESSAGE}
    assert limited.headers["X-RateLimit-Limit-3second"] == "3"
    assert limited.headers["X-RateLimit-Remaining-3second"] == "0"
    assert call(client, sandbox_state, MAIN, "product_offer/count").status_code == 200
    time.sleep(1.05)
    # invalid requests count too: this one is refused by eMAG but uses up budget
    assert refusal(call(client, sandbox_state, FBE, "product_offer/read", {"itemsPerPage": 500}))
    assert call(client, sandbox_state, FBE, "product_offer/count").status_code == 200
    assert call(client, sandbox_state, FBE, "product_offer/count").status_code == 200
    assert call(client, sandbox_state, FBE, "product_offer/count").status_code == 429


def test_requests_under_the_limit_are_never_refused(client: TestClient, sandbox_state: SandboxState) -> None:
    sandbox_state.rate_limit = True
    statuses = []
    for _ in range(4):  # 3/s: one every 0.34 s is always inside the budget
        statuses.append(call(client, sandbox_state, FBE, "product_offer/count").status_code)
        time.sleep(0.34)
    assert statuses == [200] * 4
    sandbox_state.rate_limit = False
    assert {call(client, sandbox_state, FBE, "product_offer/count").status_code for _ in range(10)} == {200}


# --- saves ------------------------------------------------------------------------------------------
def test_accepted_offer_save_changes_later_reads(client: TestClient, sandbox_state: SandboxState) -> None:
    record = sandbox_state.catalogue_records(MAIN)[7]
    new_price = (Decimal(record["min_sale_price"]) + Decimal("0.0100")).quantize(Decimal("0.0001"))
    response = call(
        client, sandbox_state, MAIN, "offer/save", [{"id": record["id"], "sale_price": str(new_price)}]
    )
    assert results(response) == []
    read = results(call(client, sandbox_state, MAIN, "product_offer/read", {"id": record["id"]}))
    assert read[0]["sale_price"] == f"{new_price:.4f}"
    assert [(s.account, s.action, s.entity["id"]) for s in sandbox_state.saves] == [
        (MAIN, "save", record["id"])
    ]
    # new bounds in the same entity make a price outside the old range acceptable
    high = Decimal(record["max_sale_price"]) * 2
    entity = {"id": record["id"], "sale_price": float(high), "max_sale_price": str(high + 1)}
    assert results(call(client, sandbox_state, MAIN, "offer/save", entity)) == []
    saved = sandbox_state.record_by_id(MAIN, record["id"])
    assert saved is not None and Decimal(saved["sale_price"]) == high


def test_invalid_saves_are_refused_whole_naming_each_id(
    client: TestClient, sandbox_state: SandboxState
) -> None:
    good, bad = sandbox_state.catalogue_records(FBE)[:2]
    too_high = str(Decimal(bad["max_sale_price"]) + 1)
    messages = refusal(
        call(
            client,
            sandbox_state,
            FBE,
            "offer/save",
            [
                {"id": good["id"], "sale_price": good["min_sale_price"]},
                {"id": bad["id"], "sale_price": too_high},
                {"id": 999, "sale_price": "10"},
                {"id": good["id"], "sale_price": "1.23456"},
                {"id": good["id"], "sale_price": "0"},
                {"id": good["id"], "recommended_price": good["min_sale_price"]},
            ],
        )
    )
    assert len(messages) == 5
    assert f"Offer id {bad['id']}" in messages[0] and "outside" in messages[0]
    assert "Offer id 999" in messages[1] and "no such offer" in messages[1]
    assert "4 decimals" in messages[2] and "greater than 0" in messages[3]
    assert "recommended_price" in messages[4] and "greater than" in messages[4]
    assert sandbox_state.saves == []
    assert sandbox_state.catalogue_records(FBE)[0] == good  # nothing applied
    too_many = [{"id": good["id"], "sale_price": good["sale_price"]}] * (MAX_ENTITIES_PER_SAVE + 1)
    assert "Maximum 50 entities" in refusal(call(client, sandbox_state, FBE, "offer/save", too_many))[0]


def test_product_offer_save_needs_the_full_offer(client: TestClient, sandbox_state: SandboxState) -> None:
    record = sandbox_state.catalogue_records(MAIN)[0]
    messages = refusal(
        call(client, sandbox_state, MAIN, "product_offer/save", [{"id": record["id"], "status": 1}])
    )
    assert {m.split(": ")[1].split()[0] for m in messages} == {
        "sale_price",
        "vat_id",
        "handling_time",
        "stock",
    }
    full = {
        "id": record["id"],
        "status": 0,
        "sale_price": record["sale_price"],
        "vat_id": 1,
        "handling_time": [{"warehouse_id": 1, "value": 2}],
        "stock": [{"warehouse_id": 1, "value": 7}],
    }
    assert results(call(client, sandbox_state, MAIN, "product_offer/save", [full], wrap=True)) == []
    read = sandbox_state.record_by_id(MAIN, record["id"])
    assert read is not None
    assert (read["status"], read["general_stock"], read["stock"]) == (0, 7, [{"warehouse_id": 1, "value": 7}])
    assert read["handling_time"] == [{"warehouse_id": 1, "value": 2}]


# --- faults -----------------------------------------------------------------------------------------
def test_error_rate_answers_5xx_deterministically(client: TestClient, sandbox_state: SandboxState) -> None:
    sandbox_state.set_faults(FBE, error_rate=1.0)
    answer = call(client, sandbox_state, FBE, "product_offer/read")
    assert answer.status_code in (500, 502, 504) and answer.headers["content-type"].startswith("text/html")
    assert (
        call(client, sandbox_state, MAIN, "product_offer/read").status_code == 200
    )  # the other account works

    def statuses() -> list[int | None]:
        state = SandboxState(products=20, rate_limit=False)
        state.set_faults(FBE, error_rate=0.3)
        return [state.gate(FBE).status_code for _ in range(40)]

    first = statuses()
    assert first == statuses()
    assert 3 <= sum(s is not None for s in first) <= 25


def test_forced_429_error_pages_and_fail_from_request(
    client: TestClient, sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults(FBE, force_429=2, error_pages={2})
    read = [call(client, sandbox_state, FBE, "product_offer/read", {"currentPage": p}) for p in (1, 1, 1, 2)]
    assert [r.status_code for r in read] == [429, 429, 200, 200]
    assert read[0].json() == {"message": RATE_LIMIT_MESSAGE}
    assert "page 2" in refusal(read[3])[0]
    sandbox_state.set_faults(MAIN, fail_from_request=2)
    codes = [call(client, sandbox_state, MAIN, "product_offer/count").status_code for _ in range(5)]
    assert codes[:2] == [200, 200] and set(codes[2:]) <= {500, 503} and len(set(codes[2:])) == 2
    sandbox_state.set_faults(MAIN)
    assert call(client, sandbox_state, MAIN, "product_offer/count").status_code == 200


def test_malformed_records_are_the_same_on_every_read(
    client: TestClient, sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults(FBE, malformed_rate=0.2)
    first = results(call(client, sandbox_state, FBE, "product_offer/read"))
    assert first == results(call(client, sandbox_state, FBE, "product_offer/read"))
    no_sku = [r for r in first if "part_number" not in r]
    bad_price = [r for r in first if r["sale_price"] == "12,5a"]
    no_id = [r for r in first if "id" not in r]
    assert no_sku and bad_price and no_id
    assert 8 <= len(no_sku) + len(bad_price) + len(no_id) <= 35
    assert results(call(client, sandbox_state, FBE, "product_offer/count")) == {
        "noOfItems": "250",
        "noOfPages": "3",
        "itemsPerPage": "100",
    }


def test_latency_overlaps_concurrent_requests(sandbox_state: SandboxState, sandbox_server: Any) -> None:
    sandbox_state.set_faults(FBE, latency_seconds=0.4)
    statuses: list[int] = []

    def read() -> None:
        with httpx.Client(base_url=sandbox_server.url, auth=sandbox_state.credentials[FBE]) as http:
            statuses.append(http.post("/product_offer/count", json={"data": {}}).status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert statuses == [200] * 4
    assert 0.4 <= elapsed < 1.2  # in parallel, not 4 x 0.4 s


def test_removed_and_repriced_records_between_runs(client: TestClient, sandbox_state: SandboxState) -> None:
    before = {r["id"]: r for r in sandbox_state.catalogue_records(MAIN)}
    removed = sandbox_state.remove_records(MAIN, 5)
    repriced = sandbox_state.reprice_records(MAIN, 4)
    after = {r["id"]: r for r in sandbox_state.catalogue_records(MAIN)}
    assert len(removed) == 5 and set(before) - set(after) == set(removed)
    assert results(call(client, sandbox_state, MAIN, "product_offer/count"))["noOfItems"] == "195"
    for emag_id in repriced:
        new, old = after[emag_id], before[emag_id]
        assert new["sale_price"] != old["sale_price"]
        assert Decimal(new["min_sale_price"]) <= Decimal(new["sale_price"]) <= Decimal(new["max_sale_price"])
    assert refusal(call(client, sandbox_state, MAIN, "offer/save", {"id": removed[0], "sale_price": "1"}))
    # offset paging has no snapshot: removing a record shifts the later ones to earlier pages
    page2 = results(
        call(client, sandbox_state, MAIN, "product_offer/read", {"currentPage": 2, "itemsPerPage": 10})
    )
    first = results(call(client, sandbox_state, MAIN, "product_offer/read", {"itemsPerPage": 1}))[0]["id"]
    sandbox_state.remove_records(MAIN, 0, ids=[first])
    shifted = results(
        call(client, sandbox_state, MAIN, "product_offer/read", {"currentPage": 1, "itemsPerPage": 10})
    )
    assert shifted[-1]["id"] == page2[0]["id"]
    with pytest.raises(ValueError, match="no live record"):
        sandbox_state.remove_records(MAIN, 0, ids=[first])


# --- control endpoints and the loopback server ------------------------------------------------------
def test_fault_endpoint_takes_what_the_option_takes(client: TestClient, sandbox_state: SandboxState) -> None:
    """`--error-page N` (repeatable) is `error_page`: one page or a list, as `error_pages` is; every field of
    the README's table is a field of the faults, and a value of the wrong type is refused naming the field."""
    assert set(FAULT_FIELDS) == {f.name for f in dataclasses.fields(Faults)}
    for body in ({"error_page": 3}, {"error_page": [3]}, {"error-page": [3]}, {"error_pages": 3}):
        answer = client.post("/_sandbox/faults/fbe", json=body)
        assert answer.status_code == 200 and answer.json()["error_pages"] == [3], (body, answer.text)
    assert sandbox_state.faults[FBE] == Faults(error_pages={3})
    client.post(
        "/_sandbox/faults/fbe", json={"latency": 0.5, "shift_after_page": 2, "hostile_records": "nul"}
    )
    assert sandbox_state.faults[FBE] == Faults(
        latency_seconds=0.5, mutate_after_page=2, mutate_remove=1, mutate_add=1, hostile_records=["nul"]
    )
    for body, named in (
        ({"error_page": "3"}, 'error_pages takes integer or list of integers, got "3"'),
        ({"error_page": [2.5]}, "error_pages takes integer or list of integers, got [2.5]"),
        ({"force_429": True}, "force_429 takes integer >= 0, got true"),
        ({"error_rate": "high"}, 'error_rate takes number 0..1, got "high"'),
    ):
        refused = client.post("/_sandbox/faults/fbe", json=body)
        assert refused.status_code == 422 and named in refused.json()["detail"], (body, refused.text)


def test_control_endpoints(client: TestClient, sandbox_state: SandboxState) -> None:
    set_ = client.post("/_sandbox/faults/fbe", json={"error_pages": [3], "latency_seconds": 0})
    assert set_.status_code == 200 and set_.json()["error_pages"] == [3]
    assert sandbox_state.faults[FBE] == Faults(error_pages={3})
    assert client.post("/_sandbox/faults/fbe", json={"eror_rate": 1}).status_code == 422
    assert client.post("/_sandbox/faults/nope", json={}).status_code == 404
    assert client.post("/_sandbox/faults/fbe", content=b"{oops").status_code == 422
    refusal(call(client, sandbox_state, FBE, "product_offer/read", {"currentPage": 3}))
    log = client.get("/_sandbox/requests", params={"account": "fbe"}).json()
    assert [(r["resource"], r["action"], r["page"], r["status_code"]) for r in log] == [
        ("product_offer", "read", 3, 200)
    ]
    removed = client.post("/_sandbox/records/main/remove", json={"n": 2}).json()["removed"]
    assert len(removed) == 2 and sandbox_state.record_by_id(MAIN, removed[0]) is None
    assert len(client.post("/_sandbox/records/main/reprice", json={"n": 1}).json()["repriced"]) == 1
    record = sandbox_state.catalogue_records(FBE)[0]
    results(
        call(
            client, sandbox_state, FBE, "offer/save", {"id": record["id"], "sale_price": record["sale_price"]}
        )
    )
    assert client.get("/_sandbox/saves").json()[0]["entity"]["id"] == record["id"]
    assert client.post("/_sandbox/reset").json() == {"reset": True}
    assert sandbox_state.request_log == [] and sandbox_state.saves == []
    assert sandbox_state.faults[FBE] == Faults() and sandbox_state.record_by_id(MAIN, removed[0]) is not None


def test_serve_on_a_loopback_port(sandbox_state: SandboxState, sandbox_server: Any) -> None:
    assert sandbox_server.url.startswith("http://127.0.0.1:") and sandbox_server.url.endswith("/api-3")
    assert set(sandbox_server.env) == {
        "EMAG_API_URL",
        "EMAG_MAIN_USERNAME",
        "EMAG_MAIN_PASSWORD",
        "EMAG_FBE_USERNAME",
        "EMAG_FBE_PASSWORD",
    }
    with httpx.Client(base_url=sandbox_server.url) as http:
        assert http.post("/product_offer/read", json={}).status_code == 401
        env = sandbox_server.env
        auth = (env["EMAG_FBE_USERNAME"], env["EMAG_FBE_PASSWORD"])
        page = http.post("/product_offer/read", json={"data": {"currentPage": 3}}, auth=auth)
        assert len(results(page)) == 50
        http.post(sandbox_server.control_url + "/faults/fbe", json={"force_429": 1})
        assert http.post("/product_offer/count", json={}, auth=auth).status_code == 429
    assert [(r.account, r.status_code) for r in sandbox_state.request_log] == [
        (None, 401),
        (FBE, 200),
        (FBE, 429),
    ]


def test_sandbox_env_points_settings_at_the_server(sandbox_env: Any) -> None:
    from emag_sync.accounts import legacy_account
    from emag_sync.settings import get_settings

    config = get_settings().account_config(legacy_account(FBE))
    assert config.api_url == sandbox_env.url and config.username == "sandbox-fbe"


# --- hostile records --------------------------------------------------------------------------------


def test_hostile_records_of_every_kind_are_served_on_every_read(
    client: TestClient, sandbox_state: SandboxState
) -> None:
    """One record per kind, the same ones on every read; the JSON text is what a hostile eMAG sends."""
    from emag_sandbox.hostile import HOSTILE_KINDS, hostile_records
    from emag_sync.api.salvage import UnreadableRecord, parse_answer

    clean = sandbox_state.catalogue_records(FBE)
    sandbox_state.set_faults(FBE, hostile_records=["all"])
    found = hostile_records(sandbox_state, FBE)
    assert sorted(found.values()) == sorted(HOSTILE_KINDS) and len(found) == len(HOSTILE_KINDS)
    pages = [
        call(client, sandbox_state, FBE, "product_offer/read", {"currentPage": page}) for page in (1, 2, 3)
    ]
    assert [p.content for p in pages] == [
        call(client, sandbox_state, FBE, "product_offer/read", {"currentPage": page}).content
        for page in (1, 2, 3)
    ]
    text = b"".join(p.content for p in pages).decode()  # the lone surrogate: an ASCII escape
    served = [record for page in pages for record in parse_answer(page.content)["results"]]
    assert len(served) == len(clean) == 250
    by_kind = {kind: served[index] for index, kind in enumerate(
        found.get(record["id"]) for record in clean) if kind}  # fmt: skip
    assert "\\u0000 after a NUL" in text and by_kind["nul"]["description"].endswith("\x00 after a NUL")
    assert '"Path C:\\\\u0000 (a backslash, then u0000)"' in text
    assert by_kind["escaped_nul"]["description"] == "Path C:\\u0000 (a backslash, then u0000)"
    assert (
        "16 GB \\ud800" in text
        and by_kind["lone_surrogate"]["characteristics"][-1]["value"] == "16 GB \ud800"
    )
    assert (
        by_kind["big_integer"]["warranty"] == 2**64 + 24
        and by_kind["big_integer"]["number_of_offers"] == 2**70
    )
    assert by_kind["big_id"]["id"] > 2**64
    assert len(by_kind["long_part_number"]["part_number"]) > 3000
    for kind in ("deep", "long_number", "nan"):
        assert isinstance(by_kind[kind], UnreadableRecord), kind
    assert "[" * 50_000 in text and "9" * 5000 in text and '"best_offer_sale_price":NaN' in text
    assert by_kind["markup"]["part_number"] == "KIT[/2]"
    assert "[/data] [sale_price] <img src=x onerror=alert(1)>" in by_kind["markup"]["name"]
    untouched = [r for r in served if not isinstance(r, UnreadableRecord) and r not in by_kind.values()]
    assert untouched == [r for r in clean if r["id"] not in found]


def test_hostile_records_through_the_control_endpoint_and_unknown_kinds_refused(
    client: TestClient, sandbox_state: SandboxState
) -> None:
    answer = client.post("/_sandbox/faults/main", json={"hostile_records": "nul, markup"})
    assert answer.status_code == 200 and answer.json()["hostile_records"] == ["nul", "markup"]
    assert sandbox_state.faults[MAIN] == Faults(hostile_records=["nul", "markup"])
    refused = client.post("/_sandbox/faults/main", json={"hostile_records": ["nul", "emoji"]})
    assert refused.status_code == 422 and "unknown hostile record kind 'emoji'" in refused.text
    page = results(call(client, sandbox_state, MAIN, "product_offer/read"))
    assert page[5]["description"].endswith("\x00 after a NUL") and page[28]["part_number"] == "KIT[/2]"


def test_the_sandbox_command_serves_hostile_records() -> None:
    from typer.testing import CliRunner

    from emag_sandbox.server import serve_in_process
    from emag_sync.cli import app

    refused = CliRunner().invoke(app, ["sandbox", "--hostile-records", "nul,emoji"])
    assert refused.exit_code == 1 and "unknown hostile record kind 'emoji'" in refused.stderr
    with serve_in_process("--products", "40", "--no-rate-limit", "--hostile-records", "deep,nan") as sandbox:
        faults = httpx.get(sandbox.control_url + "/faults").json()
    assert faults["fbe"]["hostile_records"] == faults["main"]["hostile_records"] == ["deep", "nan"]


# --- many accounts on many platforms ----------------------------------------------------------------
# A seller on eMAG RO, BG and HU: MAIN and FBE on RO and BG, MAIN alone on HU.
SELLER = (
    SandboxAccount("ro-main", "emag-ro", "main", 40),
    SandboxAccount("ro-fbe", "emag-ro", "fbe", 50),
    SandboxAccount("bg-main", "emag-bg", "main", 30),
    SandboxAccount("bg-fbe", "emag-bg", "fbe", 35),
    SandboxAccount("hu-main", "emag-hu", "main", 25),
)
CURRENCY = {"emag-ro": "RON", "emag-bg": "EUR", "emag-hu": "HUF"}  # BG prices in EUR since 2026-01-01


def read_everything(http: httpx.Client, auth: tuple[str, str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for page in range(1, 100):
        answer = results(http.post("/product_offer/read", json={"data": {"currentPage": page}}, auth=auth))
        records += answer
        if len(answer) < MAX_ITEMS_PER_PAGE:
            return records
    raise AssertionError("the read never ended")


def test_a_seller_on_three_platforms_has_a_catalogue_per_account(serve_sandbox: Any) -> None:
    state = SandboxState(accounts=SELLER, rate_limit=False)
    with serve_sandbox(state) as running:
        served: dict[str, list[dict[str, Any]]] = {}
        for account in SELLER:
            env = running.env
            auth = (env[account.env_prefix + "USERNAME"], env[account.env_prefix + "PASSWORD"])
            with httpx.Client(base_url=env[account.env_prefix + "API_URL"]) as http:
                count = results(http.post("/product_offer/count", json={"data": {}}, auth=auth))
                served[account.name] = read_everything(http, auth)
            assert count["noOfItems"] == str(account.products)
            assert served[account.name] == state.catalogue_records(account.name)
            assert {r["currency"] for r in served[account.name]} == {CURRENCY[account.platform]}
    assert all(r["sale_price"].endswith(".0000") for r in served["hu-main"])  # whole forints
    ids = [r["id"] for records in served.values() for r in records]
    assert len(ids) == len(set(ids)) == sum(a.products for a in SELLER)
    # MAIN and FBE share SKUs like today; the same SKU is the same eMAG product on every platform
    ro_fbe = {r["part_number"]: r for r in served["ro-fbe"]}
    for main in ("ro-main", "bg-main", "hu-main"):
        shared = [r for r in served[main] if r["part_number"] in ro_fbe]
        assert shared and all(r["part_number"].startswith("EMG") for r in shared)
        assert all(r["part_number_key"] == ro_fbe[r["part_number"]]["part_number_key"] for r in shared)
    # the same SKUs, offers of their own: each account has its own prices and stock
    ro_main, bg_main = served["ro-main"][:30], served["bg-main"]
    assert [r["part_number"] for r in ro_main] == [r["part_number"] for r in bg_main]
    assert [r["general_stock"] for r in ro_main] != [r["general_stock"] for r in bg_main]


def test_catalogues_of_many_accounts_are_deterministic_and_bounded() -> None:
    first, second = SandboxState(accounts=SELLER, seed=5), SandboxState(accounts=SELLER, seed=5)
    for account in SELLER:
        assert first.catalogue_records(account.name) == second.catalogue_records(account.name)
    assert first.catalogue_records("bg-main") != SandboxState(accounts=SELLER, seed=6).catalogue_records(
        "bg-main"
    )
    # the first two accounts keep today's id ranges, whatever they are called
    assert first.catalogues["ro-main"].id_of(0) == SandboxState().catalogues[MAIN].id_of(0) == 100_000_001
    assert first.catalogues["ro-fbe"].id_of(0) == 200_000_001
    assert first.catalogues["bg-main"].id_of(0) == 300_000_001
    with pytest.raises(ValueError, match="at most 3333333 records fit its id range"):
        SandboxState(accounts=[*SELLER, SandboxAccount("big", "hu", "fbe", 3_333_334)])
    with pytest.raises(ValueError, match="'bg-main' is given twice"):
        SandboxState(accounts=[*SELLER, SandboxAccount("bg-main", "bg", "fbe", 1)])


def test_account_values_are_checked() -> None:
    account = SandboxAccount("acme-bg-main", "bg", "main", 3)
    assert (account.platform, account.username, account.password) == (
        "emag-bg",
        "sandbox-acme-bg-main",
        "sandbox-acme-bg-main-password",
    )
    assert account.env_prefix == "EMAG_ACME_BG_MAIN_"
    with pytest.raises(ValueError, match="lower-case letters, digits and '-'"):
        SandboxAccount("Acme BG")
    with pytest.raises(ValueError, match="platform must be one of emag-ro"):
        SandboxAccount("x", "mars")
    with pytest.raises(ValueError, match="kind must be main or fbe"):
        SandboxAccount("x", "ro", "fbm")
    assert parse_account("bg-fbe:emag-bg:fbe:500") == SandboxAccount("bg-fbe", "emag-bg", "fbe", 500)
    assert parse_account("hu:hu:MAIN", default_products=9) == SandboxAccount("hu", "emag-hu", "main", 9)
    for bad in ("bg-fbe", "bg-fbe:bg", "bg-fbe:bg:fbe:5:6", "bg-fbe:bg:fbe:many"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            parse_account(bad)


def test_account_type_members_still_name_the_default_accounts(
    sandbox_state: SandboxState, client: TestClient
) -> None:
    """AccountType is a StrEnum: AccountType.MAIN is the name "main" everywhere, and logs hold it."""
    assert list(sandbox_state.accounts) == ["main", "fbe"]
    assert sandbox_state.read(MAIN, {"itemsPerPage": 5}) == sandbox_state.read("main", {"itemsPerPage": 5})
    assert sandbox_state.count("fbe", {}) == sandbox_state.count(FBE, {})
    sandbox_state.set_faults("fbe", force_429=1)
    assert sandbox_state.faults[FBE].force_429 == 1
    assert call(client, sandbox_state, FBE, "product_offer/count").status_code == 429
    record = sandbox_state.catalogue_records("main")[0]
    results(call(client, sandbox_state, MAIN, "offer/save", {"id": record["id"], "status": 1}))
    logged, saved = sandbox_state.request_log[0].account, sandbox_state.saves[0].account
    assert logged is FBE and saved is MAIN and isinstance(logged, str)  # code written for two accounts works
    with pytest.raises(UnknownAccountError, match="unknown account 'ro-main'; this sandbox has main, fbe"):
        sandbox_state.count("ro-main", {})
    unknown = client.post("/_sandbox/records/ro-main/remove", json={"n": 1})
    assert unknown.status_code == 404 and "this sandbox has main, fbe" in unknown.text


def test_control_endpoints_take_account_names() -> None:
    state = SandboxState(accounts=SELLER, rate_limit=False)
    client = client_for(state)
    assert set(client.get("/_sandbox/faults").json()) == {a.name for a in SELLER}
    assert client.post("/_sandbox/faults/bg-fbe", json={"force_429": 1}).status_code == 200
    assert state.faults["bg-fbe"] == Faults(force_429=1) and state.faults["bg-main"] == Faults()
    removed = client.post("/_sandbox/records/hu-main/remove", json={"n": 2}).json()["removed"]
    assert len(removed) == 2 and state.count("hu-main", {})["noOfItems"] == "23"
    auth = state.credentials["bg-fbe"]
    assert client.post("/emag-bg/api-3/product_offer/count", json={}, auth=auth).status_code == 429
    log = client.get("/_sandbox/requests", params={"account": "bg-fbe"}).json()
    assert [(r["account"], r["status_code"]) for r in log] == [("bg-fbe", 429)]
    assert client.get("/_sandbox/requests", params={"account": "fbe"}).status_code == 404


# --- budgets per login ------------------------------------------------------------------------------
def test_one_accounts_429_leaves_the_other_accounts_budgets(serve_sandbox: Any) -> None:
    slow = SandboxAccount("hu-fbe", "emag-hu", "fbe", 10, requests_per_second=1)
    state = SandboxState(accounts=[*SELLER, slow], rate_limit=True)
    with serve_sandbox(state) as running, httpx.Client() as http:

        def count(name: str) -> httpx.Response:
            url = running.url_for(state.accounts[name].platform) + "/product_offer/count"
            return http.post(url, json={}, auth=state.credentials[name])

        assert [count("bg-main").status_code for _ in range(4)] == [200, 200, 200, 429]
        for name in ("ro-main", "ro-fbe", "bg-fbe", "hu-main"):  # each its own 3 per second
            assert [count(name).status_code for _ in range(3)] == [200, 200, 200], name
        first, second = count("hu-fbe"), count("hu-fbe")  # an account of its own rate
        assert (first.status_code, second.status_code) == (200, 429)
        assert second.headers["X-RateLimit-Limit-3second"] == "1"
    assert [r.account for r in state.request_log if r.status_code == 429] == ["bg-main", "hu-fbe"]


def test_accounts_sharing_a_login_share_one_budget(serve_sandbox: Any) -> None:
    """The same login on two platforms is one budget: three requests a second between them."""
    ro = SandboxAccount("acme-ro-main", "emag-ro", "main", 10, username="acme", password="acme-pw")
    bg = SandboxAccount("acme-bg-main", "emag-bg", "main", 10, username="acme", password="acme-pw")
    other = SandboxAccount("acme-ro-fbe", "emag-ro", "fbe", 10)
    state = SandboxState(accounts=[ro, bg, other], rate_limit=True)
    with serve_sandbox(state) as running, httpx.Client() as http:

        def count(platform: str, login: tuple[str, str]) -> int:
            return http.post(
                running.url_for(platform) + "/product_offer/count", json={}, auth=login
            ).status_code

        assert [count("emag-ro", ro.login), count("emag-ro", ro.login), count("emag-bg", bg.login)] == [
            200
        ] * 3
        assert count("emag-bg", bg.login) == 429 and count("emag-ro", ro.login) == 429
        assert count("emag-ro", other.login) == 200  # another login, another budget
    assert [r.account for r in state.request_log] == [
        "acme-ro-main",
        "acme-ro-main",
        "acme-bg-main",
        "acme-bg-main",
        "acme-ro-main",
        "acme-ro-fbe",
    ]
    with pytest.raises(ValueError, match="share a login, so one budget"):
        SandboxState(accounts=[ro, dataclasses.replace(bg, requests_per_second=12)])


# --- platform routes --------------------------------------------------------------------------------
def test_a_platform_url_refuses_another_platforms_credentials(serve_sandbox: Any) -> None:
    state = SandboxState(accounts=SELLER, rate_limit=False)
    bg = state.credentials["bg-main"]
    with serve_sandbox(state) as running, httpx.Client() as http:
        assert running.url_for("bg") == running.url_for("emag-bg") == running.base_url + "/emag-bg/api-3"
        wrong_platform = http.post(running.url_for("emag-ro") + "/product_offer/count", json={}, auth=bg)
        wrong_password = http.post(running.url + "/product_offer/count", json={}, auth=(bg[0], "nope"))
        for refused in (wrong_platform, wrong_password):
            assert refused.status_code == 401
            assert refused.json() == {
                "isError": True,
                "messages": ["Invalid username or password"],
                "results": [],
            }
            assert refused.headers["www-authenticate"] == 'Basic realm="eMAG Marketplace API"'
        assert results(http.post(running.url_for("emag-bg") + "/product_offer/count", json={}, auth=bg))
        assert results(http.post(running.url + "/product_offer/count", json={}, auth=bg))  # any account
        unknown = http.post(running.base_url + "/emag-pl/api-3/product_offer/count", json={}, auth=bg)
        assert unknown.status_code == 404 and "emag-ro, emag-bg" in unknown.json()["messages"][0]
    assert [(r.account, r.status_code) for r in state.request_log] == [
        (None, 401),
        (None, 401),
        ("bg-main", 200),
        ("bg-main", 200),
    ]


# --- environment and the command --------------------------------------------------------------------
def test_env_names_every_account(serve_sandbox: Any) -> None:
    """main and fbe keep today's variables; other accounts get theirs, with their platform's URL."""
    state = SandboxState(
        accounts=[SandboxAccount("main", "ro", "main", 5), SandboxAccount("acme-bg-main", "bg", "main", 7)],
        rate_limit=False,
    )
    with serve_sandbox(state) as running:
        env = running.env
        assert env == {
            "EMAG_API_URL": running.url,
            "EMAG_MAIN_USERNAME": "sandbox-main",
            "EMAG_MAIN_PASSWORD": "sandbox-main-password",
            "EMAG_ACME_BG_MAIN_USERNAME": "sandbox-acme-bg-main",
            "EMAG_ACME_BG_MAIN_PASSWORD": "sandbox-acme-bg-main-password",
            "EMAG_ACME_BG_MAIN_API_URL": running.url_for("emag-bg"),
        }
        auth = (env["EMAG_ACME_BG_MAIN_USERNAME"], env["EMAG_ACME_BG_MAIN_PASSWORD"])
        count = httpx.post(env["EMAG_ACME_BG_MAIN_API_URL"] + "/product_offer/count", json={}, auth=auth)
        assert results(count)["noOfItems"] == "7"


def test_the_sandbox_command_serves_the_accounts_it_is_given() -> None:
    from typer.testing import CliRunner

    from emag_sandbox.server import serve_in_process
    from emag_sync.cli import app

    for options, named in (
        (["--account", "bg-fbe:emag-pl:fbe"], "'bg-fbe:emag-pl:fbe': platform must be one of"),
        (["--account", "bg-fbe:bg"], "'bg-fbe:bg' is not NAME:PLATFORM:KIND[:PRODUCTS]"),
        (["--account", "a:ro:main", "--fault-account", "both"], "'both': unknown account main, fbe"),
    ):
        refused = CliRunner().invoke(app, ["sandbox", *options])
        message = " ".join(refused.stderr.replace("│", " ").split())  # one line, boxed by typer
        assert refused.exit_code == 2 and named in message, refused.stderr
    accounts = [
        "--account",
        "ro-fbe:ro:fbe:30",
        "--account",
        "bg-main:bg:main",
        "--account",
        "hu-main:hu:main:5",
    ]
    options = ["--products", "12", "--no-rate-limit", "--force-429", "1", "--fault-account", "hu-main"]
    with serve_in_process(*accounts, *options) as sandbox:
        env = sandbox.env
        assert "EMAG_MAIN_USERNAME" not in env and env["EMAG_BG_MAIN_API_URL"].endswith("/emag-bg/api-3")
        counts = {}
        for name in ("RO_FBE", "BG_MAIN", "HU_MAIN"):
            auth = (env[f"EMAG_{name}_USERNAME"], env[f"EMAG_{name}_PASSWORD"])
            answer = httpx.post(env[f"EMAG_{name}_API_URL"] + "/product_offer/count", json={}, auth=auth)
            counts[name] = results(answer)["noOfItems"] if answer.status_code == 200 else answer.status_code
        faults = httpx.get(sandbox.control_url + "/faults").json()
    assert counts == {"RO_FBE": "30", "BG_MAIN": "12", "HU_MAIN": 429}
    assert faults["hu-main"]["force_429"] == 0 and faults["bg-main"]["force_429"] == 0
