"""Raw product_offer/read records → products, offers and rejects frames (pure pandas, no database).

A sub-step of ``tasks.sync_account``, called per batch (see ``tasks.load`` for why it has no task).
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from operator import itemgetter
from typing import Any, TypeVar

import orjson
import pandas as pd
from sqlalchemy import Table

from emag_sync.accounts import AccountType
from emag_sync.api.salvage import UnreadableRecord
from emag_sync.limits import (
    MAX_OFFER_ID,
    MIN_OFFER_ID,
    OFFER_STATUS_ACTIVE,
    OFFER_VALIDATION_SALEABLE,
    OWNERSHIP_ELIGIBLE,
    OWNERSHIP_NOT_ELIGIBLE,
    PRICE_QUANTUM,
    SELLABLE_VALIDATION_STATUSES,
)
from emag_sync.schema import (
    MAX_JSON_DEPTH,
    MAX_MONEY,
    MAX_SKU_BYTES,
    OFFER_COLUMNS,
    PAGE,
    PRODUCT_COLUMNS,
    READ_AT,
    REJECT_COLUMNS,
    offers,
    products,
)

# EAN-8 .. GTIN-14, with UPC-E (6 digits) at the short end.
EAN_PATTERN = re.compile(r"\d{6,14}", re.ASCII)
# Integers also arrive as digit strings (count's "noOfItems": "1274"); nothing fancier is accepted.
INT_PATTERN = re.compile(r"\s*-?\d+\s*", re.ASCII)
# A NUL escape in orjson's output: an odd number of backslashes before u0000 (an even number is an
# escaped backslash followed by the letters "u0000", which JSONB stores as sent).
NUL_ESCAPE = re.compile(r"(?:^|[^\\])(?:\\\\)*\\u0000")
SURROGATE = re.compile("[\ud800-\udfff]")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
VISIBLE, HIDDEN = "visible", "hidden"
SMALLINT_MAX = 32_767
INT_MAX = 2_147_483_647
BIGINT_MAX = 9_223_372_036_854_775_807

# Part of every content hash: bump it when the mapping below changes, so every row is rewritten once.
TRANSFORM_VERSION = 1


class RecordRejected(ValueError):
    """A record that cannot be loaded; the message names the field and the value."""


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


# --- scalar parsers: each returns the normalised value or raises RecordRejected -------------------


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_money(
    value: object, field: str, *, required: bool = False, positive: bool = False
) -> Decimal | None:
    """A price as an exact Decimal with four places; strings ("121.8400"), ints and JSON numbers."""
    if value is None or value == "":
        if required:
            raise RecordRejected(f"{field} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise RecordRejected(f"{field} is not a number: {_show(value)}")
    try:
        # str() first: a JSON float like 121.84 becomes exactly 121.84, not its binary expansion.
        amount = Decimal(value if isinstance(value, str | Decimal) else str(value))
    except InvalidOperation:
        raise RecordRejected(f"{field} is not a number: {_show(value)}") from None
    if not amount.is_finite():
        raise RecordRejected(f"{field} is not a finite number: {_show(value)}")
    # Quantizing a huge value (1e30) raises InvalidOperation instead of a reject: range-check it first.
    if abs(amount) < MAX_MONEY:
        amount = amount.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP)
    if amount < 0 or amount >= MAX_MONEY or (positive and amount == 0):
        low = "above 0" if positive else "at least 0"
        raise RecordRejected(f"{field} out of range ({low} and below {MAX_MONEY}): {_show(value)}")
    return amount


def _lenient_money(value: object) -> Decimal | None:
    """eMAG's own figures (best offer): informative only, so unparsable becomes NULL, not a reject."""
    try:
        return parse_money(value, "")
    except RecordRejected:
        return None


def _integer(value: object) -> int | None:
    """An integer sent as int, digit string or whole float (bools count as 0/1); None for anything else."""
    if type(value) is int:  # the common case first: this runs for every integer field of every record
        return value
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    if isinstance(value, str) and INT_PATTERN.fullmatch(value) is not None:
        try:
            return int(value)
        except ValueError:  # more digits than Python converts (4,300): beyond every column anyway
            return None
    return None


def _int_or_none(value: object, maximum: int = INT_MAX) -> int | None:
    """An informational integer: anything but an integer in the column's range is NULL (raw JSON keeps it)."""
    number = _integer(value)
    return number if number is not None and -maximum - 1 <= number <= maximum else None


def parse_emag_id(value: object) -> int:
    """The record's id: required, an integer in eMAG's range (structural: out of range is a reject)."""
    if value is None or value == "":
        raise RecordRejected("id is missing")
    number = None if isinstance(value, bool | float) else _integer(value)
    if number is None:
        raise RecordRejected(f"id is not an integer: {_show(value)}")
    if not MIN_OFFER_ID <= number <= MAX_OFFER_ID:
        raise RecordRejected(f"id out of range ({MIN_OFFER_ID}..{MAX_OFFER_ID}): {_show(value)}")
    return number


def parse_sku(value: object) -> str:
    """The record's part_number (our SKU): required, not blank, and short enough to be a key.

    Kept exactly as sent otherwise; ``raw_json`` has already refused NULs and lone surrogates.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RecordRejected(f"part_number is missing or blank: {_show(value)}")
    if not isinstance(value, str):
        raise RecordRejected(f"part_number is not text: {_show(value)}")
    if len(value) * 4 > MAX_SKU_BYTES and (size := len(value.encode())) > MAX_SKU_BYTES:
        raise RecordRejected(
            f"part_number is {size} bytes long; at most {MAX_SKU_BYTES} fit the catalogue's unique index "
            f"(eMAG documents 1 to 25 characters): {_show(value)}"
        )
    return value


def _text(value: object) -> str | None:
    """Optional text: "" is NULL (url arrives as ""); kept as sent (``raw_json`` checked it is storable)."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def status_value(value: object) -> tuple[int | None, str | None]:
    """A status as (value, description): a list of one {value, description, errors}, an object, or an int."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        return _int_or_none(value.get("value"), SMALLINT_MAX), _text(value.get("description"))
    return _int_or_none(value, SMALLINT_MAX), None


def eans(value: object) -> list[str] | None:
    """Valid EANs (6–14 digits) as text; invalid ones stay only in raw_emag_data."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    kept = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            continue
        code = str(item).strip()
        if EAN_PATTERN.fullmatch(code):
            kept.append(code)
    return kept


def _warehouse_values(value: object) -> list[int]:
    """[{"warehouse_id": 1, "value": 139}, ...] (warehouse id sometimes absent) or a bare int."""
    entries = value if isinstance(value, list) else [value]
    found = []
    for entry in entries:
        number = _int_or_none(entry.get("value") if isinstance(entry, dict) else entry)
        if number is not None:
            found.append(number)
    return found


def handling_time(value: object) -> int | None:
    """The first warehouse's handling time in days (eMAG sends one entry per warehouse)."""
    found = _warehouse_values(value)
    return found[0] if found else None


def ownership(value: object) -> int | None:
    """1 eligible for content updates, 2 not; ``true``/``false`` are observed too."""
    if value is True:
        return OWNERSHIP_ELIGIBLE
    if value is False:
        return OWNERSHIP_NOT_ELIGIBLE
    return _int_or_none(value, SMALLINT_MAX)


def gpsr_present(value: object) -> bool | None:
    """A GPSR field read plainly is a boolean; filtered by product it is a list of objects."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return bool(value) if isinstance(value, list | dict) else None


# --- raw JSON: what eMAG sent, exactly, or a reject naming what PostgreSQL cannot store --------------


def raw_json(value: object, path: str = "") -> str:
    """``value`` (a record, or its field at ``path``) as JSON text that JSONB stores exactly as sent.

    RecordRejected names the first field JSONB or the text columns cannot hold: a NUL character, a lone
    surrogate, nesting beyond MAX_JSON_DEPTH. The fast path is orjson alone; the checks run only when its
    output holds a NUL escape or it refused the value (integers beyond 64 bits then go through json,
    which writes them exactly, and JSONB keeps them as numeric).
    """
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int beyond 64 bits, > 255 levels
        _refuse_unstorable(value, path)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if "\\u0000" in text and NUL_ESCAPE.search(text):
        _refuse_unstorable(value, path)
    return text


def _refuse_unstorable(value: object, path: str) -> None:
    """Raise RecordRejected for the first (in document order) part of ``value`` PostgreSQL cannot store."""
    # (node, its path, its depth, the top-level field it is in); iterative: the value may be nested
    # deeper than Python's recursion limit.
    stack: list[tuple[object, str, int, str]] = [(value, path, 0, path)]
    while stack:
        node, where, depth, top = stack.pop()
        if isinstance(node, str):
            _refuse_text(node, where or "record")
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise RecordRejected(
                f"{top or 'record'} is nested more than {MAX_JSON_DEPTH} levels deep; "
                f"the raw JSON columns store at most {MAX_JSON_DEPTH}"
            )
        if isinstance(node, dict):
            for key in node:
                _refuse_text(str(key), f"a key of {where or 'the record'}")
            named = [(item, _field_path(where, str(key))) for key, item in node.items()]
        else:
            named = [(item, f"{where}[{index}]") for index, item in enumerate(node)]
        stack.extend((item, name, depth + 1, top or name) for item, name in reversed(named))


def _refuse_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise RecordRejected(f"{where} contains a NUL character (\\u0000), which PostgreSQL cannot store")
    found = SURROGATE.search(text)
    if found:
        raise RecordRejected(
            f"{where} contains a lone surrogate (\\u{ord(found.group()):04x}), which is not a Unicode "
            "character and PostgreSQL cannot store"
        )


def _field_path(parent: str, key: str) -> str:
    """``parent.key``, or ``parent['key']`` when the key is not a plain name (repr escapes the odd ones)."""
    if IDENTIFIER.fullmatch(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{key!r}]"


def _json_string(text: str) -> str:
    """``text`` as a JSON string literal JSONB accepts. A raw NUL or lone surrogate in it (possible only in
    bytes that were not valid JSON) is written as the six characters of its escape: JSONB holds neither."""
    if "\x00" in text or SURROGATE.search(text):
        text = SURROGATE.sub(lambda c: f"\\u{ord(c.group()):04x}", text.replace("\x00", "\\u0000"))
    return orjson.dumps(text).decode()


def _encode_iteratively(value: object) -> str:
    """JSON text of a value of any depth, without recursion; ASCII only (surrogates become escapes)."""
    parts: list[str] = []
    stack: list[tuple[bool, object]] = [(False, value)]  # (literal text?, item)
    while stack:
        literal, item = stack.pop()
        if literal:
            parts.append(str(item))
        elif isinstance(item, dict | list):
            opening, closing = ("{", "}") if isinstance(item, dict) else ("[", "]")
            sequence: list[tuple[bool, object]] = [(True, opening)]
            members = item.items() if isinstance(item, dict) else enumerate(item)
            for position, (key, child) in enumerate(members):
                if position:
                    sequence.append((True, ","))
                if isinstance(item, dict):
                    sequence.append((True, json.dumps(str(key)) + ":"))
                sequence.append((False, child))
            sequence.append((True, closing))
            stack.extend(reversed(sequence))
        else:
            parts.append(json.dumps(item))
    return "".join(parts)


def reject_payload(record: object) -> str:
    """A rejected record for ``raw_payload`` (JSONB), losslessly: the record itself when JSONB holds it
    exactly, else its JSON text as a JSON string (a NUL, a lone surrogate, too deep, or not parsable)."""
    if isinstance(record, UnreadableRecord):
        return _json_string(record.text)
    try:
        return raw_json(record)
    except RecordRejected:
        pass
    try:
        text = orjson.dumps(record).decode()
    except TypeError:
        text = _encode_iteratively(record)
    return _json_string(text)


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
    general = _int_or_none(record.get("general_stock"))
    if general is None and record.get("stock") is not None:
        general = sum(_warehouse_values(record.get("stock"))) or None
    images = record.get("images")
    return {
        "emag_id": emag_id,
        "sku": sku,
        "part_number_key": _text(record.get("part_number_key")),
        "name": _text(record.get("name")),
        "brand": _text(record.get("brand")),
        "category_id": _int_or_none(record.get("category_id"), BIGINT_MAX),
        "ean": eans(record.get("ean")),
        "url": _text(record.get("url")),
        "images": None if images is None else raw_json(images, "images"),
        "family_id": _int_or_none(family.get("id"), BIGINT_MAX),
        "family_name": _text(family.get("name")),
        "validation_status": validation,
        "validation_status_description": validation_text,
        "translation_validation_status": status_value(record.get("translation_validation_status"))[0],
        "ownership": ownership(record.get("ownership")),
        "genius_eligibility": _int_or_none(record.get("genius_eligibility"), SMALLINT_MAX),
        "number_of_offers": _int_or_none(record.get("number_of_offers")),
        "buy_button_rank": _int_or_none(record.get("buy_button_rank")),
        "best_offer_sale_price": _lenient_money(record.get("best_offer_sale_price")),
        "gpsr_manufacturer": gpsr_present(record.get("manufacturer")),
        "gpsr_eu_representative": gpsr_present(record.get("eu_representative")),
        "raw_emag_data": raw,
        "emag_offer_id": emag_id,
        "price": sale_price,
        "sale_price": sale_price,
        "recommended_price": parse_money(record.get("recommended_price"), "recommended_price"),
        "min_sale_price": parse_money(record.get("min_sale_price"), "min_sale_price"),
        "max_sale_price": parse_money(record.get("max_sale_price"), "max_sale_price"),
        "currency": _text(record.get("currency")),
        "vat_id": _int_or_none(record.get("vat_id")),
        "stock": general,
        "available_stock": _int_or_none(record.get("estimated_stock")),
        "handling_time": handling_time(record.get("handling_time")),
        "status": _int_or_none(record.get("status"), SMALLINT_MAX),
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
    account: AccountType, page: int | None, record: object, reason: str, *, raw: str | None = None
) -> dict[str, Any]:
    """A reject row; ``raw`` is the record's JSON text when the transform already has it."""
    emag_id = sku = None
    if isinstance(record, dict):
        emag_id, sku = record.get("id"), record.get("part_number")
    elif isinstance(record, UnreadableRecord):
        emag_id, sku = record.emag_id, record.part_number
    return {
        "account_type": account.value,
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
    account: AccountType,
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
    records: Sequence[object], page_of: list[int | None], read_times: list[datetime], account: AccountType
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
                else f"record is not an object: {_show(record)}"
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
        reason = f"part_number {_show(row['sku'])} repeated with another id in this batch (id {first} kept)"
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
    account: AccountType,
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
    columns["account_type"] = [account.value] * len(kept)
    columns["is_active"] = [True] * len(kept)
    columns["last_synced_at"] = [synced_at] * len(kept)
    _derive(columns)
    product_frame = _object_frame(
        {**columns, "content_hash": columns["product_hash"]}, [*PRODUCT_COLUMNS, PAGE]
    )
    offer_frame = _object_frame({**columns, "content_hash": columns["offer_hash"]}, [*OFFER_COLUMNS, READ_AT])
    reject_frame = _object_frame({c: [r[c] for r in rejects] for c in REJECT_COLUMNS}, REJECT_COLUMNS)
    return BatchFrames(product_frame, offer_frame, reject_frame, records=records, duplicates=duplicates)
