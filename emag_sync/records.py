"""What a field of an eMAG record may hold: each parser returns the normalised value or raises
RecordRejected naming the field and the value, and the raw record as JSON text PostgreSQL can store.

The rules are eMAG's (``emag_sync.limits``) and the schema's (``emag_sync.schema``); ``tasks.transform``
applies them to a batch.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import orjson

from emag_sync.api.salvage import UnreadableRecord
from emag_sync.limits import (
    MAX_OFFER_ID,
    MIN_OFFER_ID,
    OWNERSHIP_ELIGIBLE,
    OWNERSHIP_NOT_ELIGIBLE,
    PRICE_QUANTUM,
)
from emag_sync.schema import (
    MAX_JSON_DEPTH,
    MAX_MONEY,
    MAX_SKU_BYTES,
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
SMALLINT_MAX = 32_767
INT_MAX = 2_147_483_647
BIGINT_MAX = 9_223_372_036_854_775_807


class RecordRejected(ValueError):
    """A record that cannot be loaded; the message names the field and the value."""


# --- scalar parsers: each returns the normalised value or raises RecordRejected -------------------


def shown(value: object) -> str:
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
        raise RecordRejected(f"{field} is not a number: {shown(value)}")
    try:
        # str() first: a JSON float like 121.84 becomes exactly 121.84, not its binary expansion.
        amount = Decimal(value if isinstance(value, str | Decimal) else str(value))
    except InvalidOperation:
        raise RecordRejected(f"{field} is not a number: {shown(value)}") from None
    if not amount.is_finite():
        raise RecordRejected(f"{field} is not a finite number: {shown(value)}")
    # Quantizing a huge value (1e30) raises InvalidOperation instead of a reject: range-check it first.
    if abs(amount) < MAX_MONEY:
        amount = amount.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP)
    if amount < 0 or amount >= MAX_MONEY or (positive and amount == 0):
        low = "above 0" if positive else "at least 0"
        raise RecordRejected(f"{field} out of range ({low} and below {MAX_MONEY}): {shown(value)}")
    return amount


def lenient_money(value: object) -> Decimal | None:
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


def int_or_none(value: object, maximum: int = INT_MAX) -> int | None:
    """An informational integer: anything but an integer in the column's range is NULL (raw JSON keeps it)."""
    number = _integer(value)
    return number if number is not None and -maximum - 1 <= number <= maximum else None


def parse_emag_id(value: object) -> int:
    """The record's id: required, an integer in eMAG's range (structural: out of range is a reject)."""
    if value is None or value == "":
        raise RecordRejected("id is missing")
    number = None if isinstance(value, bool | float) else _integer(value)
    if number is None:
        raise RecordRejected(f"id is not an integer: {shown(value)}")
    if not MIN_OFFER_ID <= number <= MAX_OFFER_ID:
        raise RecordRejected(f"id out of range ({MIN_OFFER_ID}..{MAX_OFFER_ID}): {shown(value)}")
    return number


def parse_sku(value: object) -> str:
    """The record's part_number (our SKU): required, not blank, and short enough to be a key.

    Kept exactly as sent otherwise; ``raw_json`` has already refused NULs and lone surrogates.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RecordRejected(f"part_number is missing or blank: {shown(value)}")
    if not isinstance(value, str):
        raise RecordRejected(f"part_number is not text: {shown(value)}")
    if len(value) * 4 > MAX_SKU_BYTES and (size := len(value.encode())) > MAX_SKU_BYTES:
        raise RecordRejected(
            f"part_number is {size} bytes long; at most {MAX_SKU_BYTES} fit the catalogue's unique index "
            f"(eMAG documents 1 to 25 characters): {shown(value)}"
        )
    return value


def text_or_none(value: object) -> str | None:
    """Optional text: "" is NULL (url arrives as ""); kept as sent (``raw_json`` checked it is storable)."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def status_value(value: object) -> tuple[int | None, str | None]:
    """A status as (value, description): a list of one {value, description, errors}, an object, or an int."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        return int_or_none(value.get("value"), SMALLINT_MAX), text_or_none(value.get("description"))
    return int_or_none(value, SMALLINT_MAX), None


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


def warehouse_values(value: object) -> list[int]:
    """[{"warehouse_id": 1, "value": 139}, ...] (warehouse id sometimes absent) or a bare int."""
    entries = value if isinstance(value, list) else [value]
    found = []
    for entry in entries:
        number = int_or_none(entry.get("value") if isinstance(entry, dict) else entry)
        if number is not None:
            found.append(number)
    return found


def handling_time(value: object) -> int | None:
    """The first warehouse's handling time in days (eMAG sends one entry per warehouse)."""
    found = warehouse_values(value)
    return found[0] if found else None


def ownership(value: object) -> int | None:
    """1 eligible for content updates, 2 not; ``true``/``false`` are observed too."""
    if value is True:
        return OWNERSHIP_ELIGIBLE
    if value is False:
        return OWNERSHIP_NOT_ELIGIBLE
    return int_or_none(value, SMALLINT_MAX)


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
