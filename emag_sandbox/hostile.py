"""Hostile records, served on demand (``Faults.hostile_records``): what PostgreSQL or Python cannot store,
and text that looks like markup. Record ``5 + 23 * k`` of the catalogue carries the k-th kind asked for.

Some of these cannot go through FastAPI's JSONResponse (a lone surrogate is not UTF-8, 50,000 levels are
past json's recursion limit, 5,000 digits past int's): ``render`` writes the answers, and ``RawJson``
values are copied into the text as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emag_sandbox.state import SandboxState

DEEP_LEVELS = 50_000
LONG_NUMBER_DIGITS = 5_000  # Python's json converts at most 4,300
LONG_PART_NUMBER_CHARS = 3_000  # past the unique index's 2.7 kB
FIRST_INDEX, STRIDE = 5, 23  # one kind every 23 records: on separate pages of 25

MARKUP_PART_NUMBER = "KIT[/2]"
MARKUP_NAME = "Set [/data] [sale_price] <img src=x onerror=alert(1)> [bold]x[/bold]"

# kind -> what the record carries (and what emag-sync must do with it)
HOSTILE_KINDS: dict[str, str] = {
    "nul": "a NUL character in description (\\u0000: a reject)",
    "escaped_nul": "an escaped backslash before u0000 in description (text, not a NUL: loads as sent)",
    "lone_surrogate": "a lone surrogate \\ud800 in the last characteristic's value (a reject)",
    "big_integer": "integers beyond 64 bits in warranty and number_of_offers (loads; the column is NULL)",
    "big_id": "an id beyond 64 bits (a reject)",
    "long_part_number": f"a part_number of {LONG_PART_NUMBER_CHARS}+ characters (a reject)",
    "deep": f"characteristics nested {DEEP_LEVELS} levels deep (a reject)",
    "long_number": f"a {LONG_NUMBER_DIGITS}-digit warranty (a reject)",
    "nan": "NaN as best_offer_sale_price, which is not JSON (a reject)",
    "markup": f"part_number {MARKUP_PART_NUMBER!r} and markup in the name (loads)",
}
ALL = "all"


@dataclass(frozen=True)
class RawJson:
    """A value written into the answer as this JSON text, unchecked."""

    text: str


def kinds_from(names: str | Sequence[str]) -> list[str]:
    """Validated kinds, in order (a list, or one comma-separated text); ``all`` stands for every kind."""
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    kinds: list[str] = []
    for name in names:
        for kind in HOSTILE_KINDS if name == ALL else [name]:
            if kind not in HOSTILE_KINDS:
                raise ValueError(
                    f"faults: unknown hostile record kind {kind!r}; known: {', '.join([*HOSTILE_KINDS, ALL])}"
                )
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def kind_at(index: int, size: int, kinds: Sequence[str]) -> str | None:
    """The hostile kind record ``index`` carries, if any (a later kind wins in a tiny catalogue)."""
    found = None
    for position, kind in enumerate(kinds):
        if (FIRST_INDEX + STRIDE * position) % max(size, 1) == index:
            found = kind
    return found


def make_hostile(record: dict[str, Any], kind: str) -> None:
    """Give a generated record the hostile content of ``kind`` (in place)."""
    if kind == "nul":
        record["description"] = f"{record['description']} \x00 after a NUL"
    elif kind == "escaped_nul":
        record["description"] = "Path C:\\u0000 (a backslash, then u0000)"
    elif kind == "lone_surrogate":
        record["characteristics"][-1]["value"] = "16 GB \ud800"
    elif kind == "big_integer":
        record["warranty"] = 2**64 + 24
        record["number_of_offers"] = 2**70
    elif kind == "big_id":
        record["id"] += 2**64
    elif kind == "long_part_number":
        record["part_number"] = f"{record['part_number']}-{'X' * LONG_PART_NUMBER_CHARS}"
    elif kind == "deep":
        record["characteristics"] = RawJson("[" * DEEP_LEVELS + "]" * DEEP_LEVELS)
    elif kind == "long_number":
        record["warranty"] = RawJson("9" * LONG_NUMBER_DIGITS)
    elif kind == "nan":
        record["best_offer_sale_price"] = RawJson("NaN")
    elif kind == "markup":
        record["part_number"] = MARKUP_PART_NUMBER
        record["name"] = MARKUP_NAME


def hostile_records(state: SandboxState, account: str) -> dict[int, str]:
    """The account's hostile records now: their catalogue id (before ``big_id`` changes it) -> kind."""
    account = state.account_named(str(account))  # an emag_sync Account or AccountType stands for its name
    catalogue = state.catalogues[account]
    kinds = state.faults[account].hostile_records
    found: dict[int, str] = {}
    for index in range(min(catalogue.size, FIRST_INDEX + STRIDE * len(kinds))):
        kind = kind_at(index, catalogue.size, kinds)
        if kind is not None:
            found[catalogue.id_of(index)] = kind
    return found


def render(content: Any) -> bytes:
    """JSON bytes of an answer, ``RawJson`` values copied in, lone surrogates as ``\\ud800`` escapes."""
    for ensure_ascii in (False, True):
        raw: list[str] = []

        def placeholder(value: object, raw: list[str] = raw) -> str:
            if not isinstance(value, RawJson):
                raise TypeError(f"{type(value).__name__} is not JSON")
            raw.append(value.text)
            return f"@@sandbox-raw-json-{len(raw) - 1}@@"

        text = json.dumps(
            content, ensure_ascii=ensure_ascii, allow_nan=False, separators=(",", ":"), default=placeholder
        )
        for position, value in enumerate(raw):
            text = text.replace(f'"@@sandbox-raw-json-{position}@@"', value, 1)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the \\ud800 escape is what eMAG would send
            continue
    raise AssertionError("unreachable: ASCII text always encodes")
