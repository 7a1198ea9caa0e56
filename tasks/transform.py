"""Raw product_offer/read records → products, offers and rejects frames (pure pandas, no database).

A sub-step of ``tasks.sync_account``, called per batch (see ``tasks.load`` for why it has no task). What
each field may hold, and the raw JSON PostgreSQL can store, is ``emag_sync.records``.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import Table

from emag_sync.accounts import Account
from emag_sync.api.salvage import UnreadableRecord
from emag_sync.limits import (
    MIN_OFFER_ID,
    OFFER_STATUS_ACTIVE,
    OFFER_VALIDATION_SALEABLE,
    SELLABLE_VALIDATION_STATUSES,
)
from emag_sync.records import (
    BIGINT_MAX,
    SMALLINT_MAX,
    SURROGATE,
    RecordRejected,
    eans,
    gpsr_present,
    handling_time,
    int_or_none,
    lenient_money,
    ownership,
    parse_emag_id,
    parse_money,
    parse_sku,
    raw_json,
    reject_payload,
    shown,
    status_value,
    text_or_none,
    warehouse_values,
)
from emag_sync.schema import (
    OFFER_COLUMNS,
    PAGE,
    PRODUCT_COLUMNS,
    READ_AT,
    REJECT_COLUMNS,
    offers,
    products,
)

VISIBLE, HIDDEN = "visible", "hidden"

# Part of every content hash: bump it when the mapping below changes, so every row is rewritten once.
TRANSFORM_VERSION = 1


@dataclass(frozen=True)
class BatchFrames:
    """One batch, ready to load. Columns are the schema's; JSONB columns hold JSON text.

    ``products`` also carries each record's source page (column ``page``), ``offers`` when that page was
    read (column ``read_at``). ``records`` counts what was received, ``duplicates`` the repeats of an id
    inside the batch that were dropped (the last one kept).
    """

    products: pd.DataFrame
    offers: pd.DataFrame
    rejects: pd.DataFrame
    records: int = 0
    duplicates: int = 0


def content_hash(values: tuple[object, ...], raw: str = "") -> str:
    """md5 of the values in schema order (repr: Decimals keep their exact digits, NULL differs from "").

    ``raw`` (the record's JSON) is fed as bytes: repr() of a long text costs more than hashing it.
    """
    digest = hashlib.md5(repr((TRANSFORM_VERSION, values)).encode(), usedforsecurity=False)
    digest.update(raw.encode())
    return digest.hexdigest()


# --- one record ------------------------------------------------------------------------------------


def _normalise(record: dict[str, Any]) -> dict[str, Any]:
    """Every loaded field of one record, keyed by column name; raises RecordRejected."""
    emag_id = parse_emag_id(record.get("id"))
    raw = raw_json(record)  # first: every text of a record that passes is storable as sent
    sku = parse_sku(record.get("part_number"))
    sale_price = parse_money(record.get("sale_price"), "sale_price", required=True, positive=True)
    validation, validation_text = status_value(record.get("validation_status"))
    offer_validation, offer_validation_text = status_value(record.get("offer_validation_status"))
    family = record.get("family")
    family = family if isinstance(family, dict) else {}
    general = int_or_none(record.get("general_stock"))
    if general is None and record.get("stock") is not None:
        general = sum(warehouse_values(record.get("stock"))) or None
    images = record.get("images")
    return {
        "emag_id": emag_id,
        "sku": sku,
        "part_number_key": text_or_none(record.get("part_number_key")),
        "name": text_or_none(record.get("name")),
        "brand": text_or_none(record.get("brand")),
        "category_id": int_or_none(record.get("category_id"), BIGINT_MAX),
        "ean": eans(record.get("ean")),
        "url": text_or_none(record.get("url")),
        "images": None if images is None else raw_json(images, "images"),
        "family_id": int_or_none(family.get("id"), BIGINT_MAX),
        "family_name": text_or_none(family.get("name")),
        "validation_status": validation,
        "validation_status_description": validation_text,
        "translation_validation_status": status_value(record.get("translation_validation_status"))[0],
        "ownership": ownership(record.get("ownership")),
        "genius_eligibility": int_or_none(record.get("genius_eligibility"), SMALLINT_MAX),
        "number_of_offers": int_or_none(record.get("number_of_offers")),
        "buy_button_rank": int_or_none(record.get("buy_button_rank")),
        "best_offer_sale_price": lenient_money(record.get("best_offer_sale_price")),
        "gpsr_manufacturer": gpsr_present(record.get("manufacturer")),
        "gpsr_eu_representative": gpsr_present(record.get("eu_representative")),
        "raw_emag_data": raw,
        "emag_offer_id": emag_id,
        "price": sale_price,
        "sale_price": sale_price,
        "recommended_price": parse_money(record.get("recommended_price"), "recommended_price"),
        "min_sale_price": parse_money(record.get("min_sale_price"), "min_sale_price"),
        "max_sale_price": parse_money(record.get("max_sale_price"), "max_sale_price"),
        "currency": text_or_none(record.get("currency")),
        "vat_id": int_or_none(record.get("vat_id")),
        "stock": general,
        "available_stock": int_or_none(record.get("estimated_stock")),
        "handling_time": handling_time(record.get("handling_time")),
        "status": int_or_none(record.get("status"), SMALLINT_MAX),
        "offer_validation_status": offer_validation,
        "offer_validation_status_description": offer_validation_text,
    }


@cache
def _normalised_names() -> list[str]:
    """The keys ``_normalise`` produces, in order (from a minimal valid record)."""
    return list(_normalise({"id": MIN_OFFER_ID, "part_number": "x", "sale_price": "1"}))


_unknown = set(_normalised_names()) - set(products.c.keys()) - set(offers.c.keys())
assert not _unknown, f"transform produces columns the schema does not declare: {sorted(_unknown)}"


def _reject(
    account: Account, page: int | None, record: object, reason: str, *, raw: str | None = None
) -> dict[str, Any]:
    """A reject row; ``raw`` is the record's JSON text when the transform already has it."""
    emag_id = sku = None
    if isinstance(record, dict):
        emag_id, sku = record.get("id"), record.get("part_number")
    elif isinstance(record, UnreadableRecord):
        emag_id, sku = record.emag_id, record.part_number
    return {
        "account_type": account.kind.value,
        "account": account.name,
        "page": page,
        "emag_id": _reject_text(emag_id),
        "sku": _reject_text(sku),
        "reason": reason,
        "raw_payload": reject_payload(record) if raw is None else raw,
    }


def _reject_text(value: object) -> str | None:
    """The reject's id or SKU as text a column stores: a NUL or lone surrogate as its escape (the exact
    value is in raw_payload), anything not a string or number as NULL."""
    if value is None or value == "" or not isinstance(value, str | int | float):
        return None
    text = value if isinstance(value, str) else str(value)
    return json.dumps(text)[1:-1] if "\x00" in text or SURROGATE.search(text) else text


# --- the batch -------------------------------------------------------------------------------------


def _object_frame(rows: dict[str, list[Any]], columns: Sequence[str]) -> pd.DataFrame:
    # object dtype everywhere: pandas would turn ints with NULLs into floats and text NULLs into NaN.
    return pd.DataFrame({name: pd.Series(rows[name], dtype=object) for name in columns})


def _derive(columns: dict[str, list[Any]]) -> None:
    """Columns computed from others, column-wise: reserved stock and eMAG's visibility rule."""

    def ints(name: str) -> pd.Series:
        return pd.Series(columns[name], dtype="Int64")

    general = ints("stock")
    reserved = (general - ints("available_stock")).clip(lower=0)
    columns["reserved_stock"] = reserved.astype(object).where(reserved.notna(), None).tolist()
    sellable = (
        (general > 0)
        & (ints("status") == OFFER_STATUS_ACTIVE)
        & (ints("offer_validation_status") == OFFER_VALIDATION_SALEABLE)
        & ints("validation_status").isin(SELLABLE_VALIDATION_STATUSES)
    ).fillna(False)
    columns["visibility"] = sellable.map({True: VISIBLE, False: HIDDEN}).tolist()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: a batch allocates ~40 objects per record and none are cyclic, and the
    collector's repeated passes over the live records cost as much as the normalisation itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


T = TypeVar("T")


def _per_record(name: str, records: Sequence[object], value: T | Sequence[T]) -> list[T]:
    """One value for the whole batch, or one per record."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return [value] * len(records)
    if len(value) != len(records):
        raise ValueError(f"{name} has {len(value)} entries for {len(records)} records")
    return list(value)


def transform_batch(
    records: Sequence[object],
    account: Account,
    *,
    pages: int | Sequence[int] | None = None,
    read_at: datetime | Sequence[datetime] | None = None,
    synced_at: datetime,
) -> BatchFrames:
    """Normalise one batch of raw records into frames; records that cannot be loaded become rejects.

    ``pages`` and ``read_at`` (when each record's page request left; default ``synced_at``) are one value for
    the whole batch or one per record. Within the batch an id repeated keeps its last version (a
    duplicate, not a reject); a SKU repeated under another id keeps the first id and rejects the later one,
    like a SKU already loaded earlier in the run (see tasks.load).
    """
    if synced_at.tzinfo is None:
        raise ValueError("synced_at must be timezone-aware (UTC)")
    page_of = _per_record("pages", records, pages)
    read_times = _per_record("read_at", records, synced_at if read_at is None else read_at)
    with _gc_paused():
        kept, rejects, duplicates = _split(records, page_of, read_times, account)
        return _frames(kept, rejects, account, synced_at, records=len(records), duplicates=duplicates)


def _split(
    records: Sequence[object], page_of: list[int | None], read_times: list[datetime], account: Account
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Normalised rows to load, rejects, and how many repeats of an id were dropped."""
    rejects: list[dict[str, Any]] = []
    by_id: dict[int, dict[str, Any]] = {}
    normalised = 0
    for record, page, read_at in zip(records, page_of, read_times, strict=True):
        if not isinstance(record, dict):
            reason = (
                record.reason
                if isinstance(record, UnreadableRecord)
                else f"record is not an object: {shown(record)}"
            )
            rejects.append(_reject(account, page, record, reason))
            continue
        try:
            row = _normalise(record)
        except RecordRejected as exc:
            rejects.append(_reject(account, page, record, str(exc)))
            continue
        row[PAGE] = page
        row[READ_AT] = read_at
        normalised += 1
        # Re-assigning keeps the id's first position, so the SKU check below prefers the earlier id.
        by_id[row["emag_id"]] = row

    kept: list[dict[str, Any]] = []
    id_of_sku: dict[str, int] = {}
    for row in by_id.values():
        first = id_of_sku.setdefault(row["sku"], row["emag_id"])
        if first == row["emag_id"]:
            kept.append(row)
            continue
        reason = f"part_number {shown(row['sku'])} repeated with another id in this batch (id {first} kept)"
        raw = row[products.c.raw_emag_data.name]
        rejects.append(_reject(account, row[PAGE], json.loads(raw), reason, raw=raw))
    return kept, rejects, normalised - len(by_id)


def _picker(names: list[str], table: Table) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Picks ``table``'s normalised columns from a row tuple (always a tuple, even for one column)."""
    positions = [i for i, name in enumerate(names) if name in table.c]
    get = itemgetter(*positions)
    return get if len(positions) > 1 else lambda row: (get(row),)


def _frames(
    kept: list[dict[str, Any]],
    rejects: list[dict[str, Any]],
    account: Account,
    synced_at: datetime,
    *,
    records: int,
    duplicates: int,
) -> BatchFrames:
    names = list(kept[0]) if kept else [*_normalised_names(), PAGE, READ_AT]
    rows = [tuple(row.values()) for row in kept]  # every row dict has the same key order
    transposed = zip(*rows, strict=True) if rows else [()] * len(names)
    columns: dict[str, list[Any]] = {
        name: list(values) for name, values in zip(names, transposed, strict=True)
    }
    # Every product column is a function of the raw record (and TRANSFORM_VERSION), so hashing the raw
    # JSON covers them all, plus what only raw_emag_data keeps (description, characteristics, ...).
    columns["product_hash"] = [content_hash((), raw) for raw in columns[products.c.raw_emag_data.name]]
    # Offers hash their normalised fields; the derived ones (reserved stock, visibility) follow from them.
    pick = _picker(names, offers)
    columns["offer_hash"] = [content_hash(pick(row)) for row in rows]
    columns["account_type"] = [account.kind.value] * len(kept)
    columns["account"] = [account.name] * len(kept)
    columns["is_active"] = [True] * len(kept)
    columns["last_synced_at"] = [synced_at] * len(kept)
    _derive(columns)
    product_frame = _object_frame(
        {**columns, "content_hash": columns["product_hash"]}, [*PRODUCT_COLUMNS, PAGE]
    )
    offer_frame = _object_frame({**columns, "content_hash": columns["offer_hash"]}, [*OFFER_COLUMNS, READ_AT])
    reject_frame = _object_frame({c: [r[c] for r in rejects] for c in REJECT_COLUMNS}, REJECT_COLUMNS)
    return BatchFrames(product_frame, offer_frame, reject_frame, records=records, duplicates=duplicates)
