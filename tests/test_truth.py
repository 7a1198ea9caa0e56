"""The data is true, or the run says it isn't: upstream changes during and between reads, empty answers,
whole accounts rejected, prices pushed during a sync. Each test states the fault; real sandbox, real
PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import Engine, select, update

from emag_sandbox.state import Faults, SandboxState
from emag_sync.accounts import AccountType
from emag_sync.errors import DeactivationLimitError
from emag_sync.schema import offers, products
from expectations.checkpoint import run_checkpoint
from tests.helpers import assert_matches_catalogue, assert_resumed_after, pages_in_order
from tests.test_faults import PAGE, client_for, run_sync, runs

FBE = AccountType.FBE


def active(engine: Engine, table=offers) -> dict[str, int]:
    id_column = table.c.emag_offer_id if table is offers else table.c.emag_id
    query = select(table.c.sku, id_column).where(table.c.account_type == FBE.value, table.c.is_active)
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
        "the 10% one run may deactivate: nothing was deactivated"
    )
    assert runs(engine)[-1]["status"] == "failed"
    assert_matches_catalogue(engine, sandbox_state, FBE, expected=dict(active(engine)))
    assert len(active(engine)) == 250

    allowed = run_sync(engine, sandbox_server, max_deactivated_share=1.0)
    assert allowed.status == "succeeded" and allowed.rows_deactivated == 250 and active(engine) == {}


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
                .where(offers.c.sku == target["part_number"], offers.c.account_type == FBE.value)
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
            select(offers.c.sale_price).where(offers.c.sku == sku, offers.c.account_type == FBE.value)
        )


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)
