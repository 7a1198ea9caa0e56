"""Load against the embedded PostgreSQL: one transaction per batch, idempotent, change-aware, deactivation."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.api import RequestCounters
from emag_sync.errors import RunStateError
from emag_sync.runs import finish_run, get_run, start_run
from emag_sync.schema import offers, products, sync_rejects, sync_runs, sync_seen
from tasks.load import deactivate, load_batch, missing_from_read
from tasks.transform import transform_batch
from tests.helpers import OFFERS_UPSERT, before_statement

PAYLOADS = Path(__file__).parent / "payloads"
FBE = legacy_account(AccountType.FBE)
INCIDENT_COUNT = "SELECT COUNT(*) FROM app.emag_product_offers_v2 WHERE account_type = 'fbe';"
INCIDENT_ROW = (
    "SELECT sku, emag_offer_id, price, min_sale_price, max_sale_price, stock, reserved_stock, "
    "available_stock, visibility, sync_attempts FROM app.emag_product_offers_v2 "
    "WHERE sku = 'EMG469' AND account_type = 'fbe';"
)


def emg469() -> dict:
    return json.loads((PAYLOADS / "record_fbe_emg469.json").read_text())


def catalogue(n: int) -> list[dict]:
    """EMG469 plus n-1 more FBE records derived from it."""
    base = emg469()
    records = [base]
    for k in range(1, n):
        record = copy.deepcopy(base)
        record.update(id=210_000_000 + k, part_number=f"EMG{1000 + k}", sale_price=f"{10 + k}.5000")
        records.append(record)
    return records


def new_run(engine, account=FBE) -> int:
    return start_run(
        engine,
        account,
        flow_run_id=None,
        items_per_page=100,
        pages_per_batch=1,
        expected_items=None,
        expected_pages=None,
    )


def load(engine, run_id, records, *, page=1, account=FBE, **kwargs):
    frames = transform_batch(records, account, pages=page, synced_at=datetime.now(UTC))
    return load_batch(engine, run_id, account, frames, last_page=page, **kwargs)


def full_sync(engine, records, account=FBE):
    """One complete run: load, deactivate what it did not return (as if eMAG confirmed each gone), finish."""
    run_id = new_run(engine, account)
    result = load(engine, run_id, records, account=account)
    deactivated = deactivate(
        engine, run_id, account, [sku for sku, _ in missing_from_read(engine, run_id, account)]
    )
    finish_run(engine, run_id, deactivated=deactivated)
    return result, deactivated


def table_state(engine, table):
    with engine.connect() as conn:
        return {row.sku: row for row in conn.execute(select(table))}


def test_first_load_answers_the_incident_queries(engine) -> None:
    run_id = new_run(engine)
    result = load(
        engine, run_id, catalogue(5), counters=RequestCounters(api_requests=3, rate_limited=1, retries=2)
    )
    assert (result.inserted, result.updated, result.unchanged, result.rejected, result.duplicates) == (
        5,
        0,
        0,
        0,
        0,
    )
    with engine.connect() as conn:
        assert conn.scalar(text(INCIDENT_COUNT)) == 5
        row = conn.execute(text(INCIDENT_ROW)).one()
        linked = conn.scalar(
            select(func.count())
            .select_from(offers.join(products, offers.c.product_id == products.c.id))
            .where(offers.c.sku == products.c.sku, offers.c.account_type == products.c.account_type)
        )
    assert tuple(row) == (
        "EMG469",
        200001407,
        Decimal("121.8400"),
        Decimal("100.0000"),
        Decimal("200.0000"),
        139,
        3,
        136,
        "visible",
        1,
    )
    assert linked == 5
    run = get_run(engine, run_id)
    assert (run.last_committed_page, run.batches_committed, run.records_read, run.records_loaded) == (
        1,
        1,
        5,
        5,
    )
    assert (run.rows_inserted, run.api_requests, run.rate_limited, run.retries) == (5, 3, 1, 2)


def test_failure_between_products_and_offers_leaves_the_batch_absent(engine) -> None:
    run_id = new_run(engine)

    def explode(conn) -> None:
        assert conn.scalar(select(func.count()).select_from(products)) == 3  # products were written...
        raise RuntimeError("injected between products and offers")

    with before_statement(engine, OFFERS_UPSERT, explode), pytest.raises(RuntimeError, match="injected"):
        load(engine, run_id, [*catalogue(3), "junk"], page=4)
    with engine.connect() as conn:
        for table in (products, offers, sync_seen, sync_rejects):
            assert conn.scalar(select(func.count()).select_from(table)) == 0, table.name  # ...and rolled back
    run = get_run(engine, run_id)
    assert (run.last_committed_page, run.batches_committed, run.records_read, run.rows_inserted) == (
        0,
        0,
        0,
        0,
    )
    # The same batch loads cleanly afterwards: nothing of the failed attempt is left in the way.
    assert load(engine, run_id, catalogue(3), page=4).inserted == 3


def test_loading_twice_changes_nothing(engine) -> None:
    records = catalogue(4)
    full_sync(engine, records)
    before_products, before_offers = table_state(engine, products), table_state(engine, offers)
    result, deactivated = full_sync(engine, records)
    assert (result.inserted, result.updated, result.unchanged, deactivated) == (0, 0, 4, 0)
    assert table_state(engine, products) == before_products
    assert table_state(engine, offers) == before_offers  # updated_at, sync_attempts, last_synced_at too


def test_one_changed_price_rewrites_only_its_row(engine) -> None:
    records = catalogue(4)
    full_sync(engine, records)
    before = table_state(engine, offers)
    before_products = table_state(engine, products)
    records[2]["sale_price"] = "99.1234"
    result, _ = full_sync(engine, records)
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 3)
    after, after_products = table_state(engine, offers), table_state(engine, products)
    changed = records[2]["part_number"]
    assert after[changed].sale_price == after[changed].price == Decimal("99.1234")
    assert after[changed].updated_at > before[changed].updated_at
    assert after[changed].sync_attempts == 2
    assert after_products[changed].updated_at > before_products[changed].updated_at  # raw_emag_data changed
    for sku in set(before) - {changed}:
        assert after[sku] == before[sku] and after_products[sku] == before_products[sku]


def test_duplicates_across_batches_of_a_run(engine) -> None:
    run_id = new_run(engine)
    records = catalogue(4)
    first = load(engine, run_id, records[:2], page=1)
    moved = copy.deepcopy(records[0]) | {"id": 299_000_000}  # same SKU under another id
    second = load(engine, run_id, [records[1], records[2], moved, records[3]], page=2)
    assert (first.inserted, first.duplicates) == (2, 0)
    assert (second.inserted, second.duplicates, second.rejected, second.unchanged) == (2, 1, 1, 0)
    with engine.connect() as conn:
        reject = conn.execute(select(sync_rejects)).one()
        assert conn.scalar(text(INCIDENT_COUNT)) == 4
        assert conn.scalar(select(offers.c.emag_offer_id).where(offers.c.sku == "EMG469")) == 200001407
    assert reject.run_id == run_id and reject.page == 2 and reject.emag_id == "299000000"
    assert reject.reason == "part_number 'EMG469' already loaded in this run under id 200001407"
    assert reject.raw_payload["id"] == 299_000_000
    run = get_run(engine, run_id)
    assert (run.records_read, run.records_loaded, run.duplicates_skipped, run.rows_rejected) == (6, 4, 1, 1)
    assert (run.last_committed_page, run.batches_committed) == (2, 2)


def test_transform_rejects_are_stored_with_the_run(engine) -> None:
    run_id = new_run(engine)
    bad = {"id": 5, "part_number": "BAD", "sale_price": "1,5"}
    result = load(engine, run_id, [emg469(), bad, ["not", "a", "record"]], page=3)
    assert (result.inserted, result.rejected) == (1, 2)
    with engine.connect() as conn:
        rows = conn.execute(select(sync_rejects).order_by(sync_rejects.c.id)).all()
    assert [(r.run_id, r.account_type, r.page, r.emag_id, r.sku) for r in rows] == [
        (run_id, "fbe", 3, "5", "BAD"),
        (run_id, "fbe", 3, None, None),
    ]
    assert rows[0].reason == "sale_price is not a number: '1,5'" and rows[0].raw_payload == bad
    assert rows[1].raw_payload == ["not", "a", "record"]


def test_deactivation_after_a_full_read_and_reactivation(engine) -> None:
    records = catalogue(4)
    full_sync(engine, records)
    gone, rejected = records[3]["part_number"], records[2]["part_number"]
    unparsable = records[2] | {"sale_price": "n/a"}  # returned by eMAG but rejected: not "missing"
    result, deactivated = full_sync(engine, [*records[:2], unparsable])
    assert deactivated == 1 and result.rejected == 1
    product_rows, offer_rows = table_state(engine, products), table_state(engine, offers)
    assert len(product_rows) == len(offer_rows) == 4  # never deleted
    assert not product_rows[gone].is_active and not offer_rows[gone].is_active
    assert all(product_rows[s].is_active and offer_rows[s].is_active for s in set(product_rows) - {gone})
    assert product_rows[rejected].is_active

    result, deactivated = full_sync(engine, records)  # it comes back
    assert (result.inserted, result.updated, result.unchanged, deactivated) == (0, 1, 3, 0)
    assert table_state(engine, products)[gone].is_active and table_state(engine, offers)[gone].is_active


def test_deactivation_is_per_account(engine) -> None:
    full_sync(engine, catalogue(2))
    _, deactivated = full_sync(engine, [emg469()], account=legacy_account(AccountType.MAIN))
    assert deactivated == 0
    assert all(row.is_active for row in table_state(engine, products).values())


def test_finished_or_foreign_runs_take_no_batches(engine) -> None:
    run_id = new_run(engine)
    with pytest.raises(RunStateError, match="main: sync run .* run of account fbe"):
        load(engine, run_id, [emg469()], account=legacy_account(AccountType.MAIN))
    finish_run(engine, run_id, deactivated=0)
    with pytest.raises(RunStateError, match="status 'succeeded'"):
        load(engine, run_id, [emg469()])
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(products)) == 0
        assert conn.scalar(select(sync_runs.c.batches_committed)) == 0
