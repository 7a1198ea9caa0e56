"""What eMAG holds now for the offers an update is about to change: the large-change guard, the range
checks, the warehouse check and the audit's old values compare with it, not with the last sync's copy."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, Protocol

from emag_sync.accounts import Account
from emag_sync.api.paging import CatalogueCount, Page
from emag_sync.errors import EmagApiError, PriceUpdateError
from emag_sync.prices.audit import prices_of
from emag_sync.prices.rules import StoredOffer

# eMAG's id filter takes one id, so N offers cost N reads by id; the account's pages cost one request per
# 100 records of the catalogue (plus its count). Past this many offers the count is asked, and the pages
# are read when they are fewer requests.
BY_ID_READS_AT_MOST = 10

Held = dict[str, Decimal | None]


class CurrentReader(Protocol):
    """What reading current values needs from emag_sync.api.EmagClient (the account's rate budget)."""

    def read_offer(self, emag_id: int) -> dict[str, Any] | None: ...

    def count(self, filters: Mapping[str, Any] | None = None) -> CatalogueCount: ...

    def iter_pages(
        self, filters: Mapping[str, Any] | None = None, *, count: CatalogueCount | None = None
    ) -> Iterator[Page]: ...


def read_current(reader: CurrentReader, account: Account, offers: Sequence[StoredOffer]) -> dict[int, Held]:
    """eMAG's current prices of each offer (sale, min, max, recommended), by eMAG offer id (see
    ``read_current_records``)."""
    return {
        offer_id: _held(record) for offer_id, record in read_current_records(reader, account, offers).items()
    }


def read_current_records(
    reader: CurrentReader, account: Account, offers: Sequence[StoredOffer], *, what: str = "prices"
) -> dict[int, Mapping[str, Any]]:
    """eMAG's current record of each offer, by eMAG offer id.

    One ``product_offer/read`` by id per offer, or the account's pages when those are fewer requests. A
    read that fails, or an offer eMAG does not return for its id (no record, or only other records: eMAG
    may ignore a filter), raises PriceUpdateError: nothing is validated against stale values. ``what``
    names the values in it ("prices", "stock").
    """
    skus = {offer.emag_offer_id: offer.sku for offer in offers if offer.emag_offer_id is not None}
    held: dict[int, Mapping[str, Any]] = {}
    try:
        if len(skus) > BY_ID_READS_AT_MOST:
            count = reader.count()
            if count.pages + 1 < len(skus):
                held = records_from_pages(reader, count, set(skus))
        for offer_id in [i for i in skus if i not in held]:  # (a record the pages shifted past, too)
            record = reader.read_offer(offer_id)
            if record is None:
                raise PriceUpdateError(
                    f"eMAG did not return offer id {offer_id} when read by id (no record, or records of other "
                    f"offers): its current {what} are unknown, so nothing was sent; check the offer on eMAG, "
                    "then run a sync",
                    subject=f"{skus[offer_id]} on eMAG {account.label}",
                )
            held[offer_id] = record
    except EmagApiError as exc:
        raise PriceUpdateError(
            f"reading the offers' current {what} from eMAG failed, so nothing was validated or sent: {exc.detail}",
            account=account,
        ) from exc
    return held


def records_from_pages(
    reader: CurrentReader, count: CatalogueCount, wanted: set[int]
) -> dict[int, Mapping[str, Any]]:
    """The records of the ``wanted`` offer ids found in the account's pages (one read of the catalogue)."""
    by_text = {str(offer_id): offer_id for offer_id in wanted}  # (ids compared as read_offer does)
    held: dict[int, Mapping[str, Any]] = {}
    for page in reader.iter_pages(count=count):
        for record in page.records:
            offer_id = by_text.get(str(record.get("id"))) if isinstance(record, dict) else None
            if offer_id is not None:
                held[offer_id] = record
    return held


def _held(record: Mapping[str, Any]) -> Held:
    recommended = prices_of({"sale_price": record.get("recommended_price")})["sale_price"]
    return {**prices_of(record), "recommended_price": recommended}


def with_current(offer: StoredOffer, held: Mapping[int, Held]) -> StoredOffer:
    """The offer as eMAG holds it now (its prices replaced by what ``read_current`` found)."""
    assert offer.emag_offer_id is not None  # check_published refuses offers without one
    now = held[offer.emag_offer_id]
    return replace(
        offer,
        sale_price=now["sale_price"],
        min_sale_price=now["min_sale_price"],
        max_sale_price=now["max_sale_price"],
        recommended_price=now["recommended_price"],
    )
