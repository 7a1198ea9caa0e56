"""eMAG's answers as JSON: parsed whole, or record by record when one record is more than Python can parse.

A page is one JSON text, so one record nested deeper than Python's recursion limit, or holding a number
longer than Python converts (4,300 digits), or ``NaN`` (not JSON, which Python would read as a float that
no JSON column stores) would make the whole page unreadable, and the account's sync fail on every run.
When the fast parse fails, the envelope is split at its top level by a small iterative scanner and each
record of ``results`` is parsed alone; a record that still cannot be parsed becomes an ``UnreadableRecord``
that the transform rejects by name, with eMAG's text kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

RESULTS = "results"


@dataclass(frozen=True)
class UnreadableRecord:
    """A record of a page that Python cannot parse: its JSON text as eMAG sent it and why.

    ``emag_id`` and ``part_number`` are the record's top-level ``id`` and ``part_number`` when those
    members could be read on their own (so the reject still names the offer), else None.
    """

    text: str
    reason: str
    emag_id: object = None
    part_number: object = None


class TooDeep(ValueError):
    """JSON nested deeper than Python's parser reads (its RecursionError, as a ValueError)."""

    def __init__(self) -> None:
        super().__init__("nested deeper than Python's JSON parser reads")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# NaN and Infinity are not JSON; Python's json would read them as floats that JSONB cannot store.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def loads(text: str) -> Any:
    """Strict JSON (no NaN/Infinity); ValueError for anything unreadable, RecursionError included."""
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise TooDeep from None


def parse_answer(content: bytes) -> Any:
    """An answer's JSON value; a page Python cannot parse whole is read record by record.

    ValueError when the answer is not JSON at all (an HTML error page, a truncated body).
    """
    text = content.decode(json.detect_encoding(content), "surrogatepass")
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        try:
            return _salvage_envelope(text)
        except ValueError:
            pass
        if isinstance(exc, RecursionError):
            raise TooDeep from None
        raise


# --- the scanner: spans of JSON values, without recursion -------------------------------------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# The rest of a string after its opening quote (escapes skipped), up to and including the closing quote.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# A quote, or a run of openers or closers: deep nesting is scanned a run at a time, not a bracket at a time.
_QUOTE_OR_BRACKETS = re.compile(r'"|[\[{]+|[\]}]+')
_SCALAR = re.compile(r"[^,:\[\]{}\s\"]+")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def _skip(text: str, position: int) -> int:
    return _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]  # always matches


def _value_end(text: str, start: int) -> tuple[int, int]:
    """(end, depth) of the JSON value at ``start``: where it ends and how deeply it nests containers."""
    first = text[start : start + 1]
    if first == '"':
        match = _STRING_REST.match(text, start + 1)
        if match is None:
            raise ValueError(f"unterminated string at {start}")
        return match.end(), 0
    if first not in ("[", "{"):
        match = _SCALAR.match(text, start)
        if match is None:
            raise ValueError(f"no JSON value at {start}")
        return match.end(), 0
    depth = deepest = 0
    position = start
    while True:
        found = _QUOTE_OR_BRACKETS.search(text, position)
        if found is None:
            raise ValueError(f"unterminated {first} at {start}")
        run, position = found.group(), found.end()
        if run == '"':
            match = _STRING_REST.match(text, position)
            if match is None:
                raise ValueError(f"unterminated string at {position - 1}")
            position = match.end()
        elif run[0] in "[{":
            depth += len(run)
            deepest = max(deepest, depth)
        elif len(run) >= depth:  # the value closes inside this run of closers
            return found.start() + depth, deepest
        else:
            depth -= len(run)


def _expect(text: str, position: int, char: str) -> int:
    position = _skip(text, position)
    if text[position : position + 1] != char:
        raise ValueError(f"expected {char!r} at {position}")
    return position + 1


def _members(text: str, start: int) -> Iterator[tuple[str, int, int, int]]:
    """(key, value start, value end, value depth) of each member of the object at ``start``."""
    position = _expect(text, start, "{")
    if text[_skip(text, position) : _skip(text, position) + 1] == "}":
        return
    while True:
        key_start = _skip(text, position)
        key_end, _ = _value_end(text, key_start)
        key = json.loads(text[key_start:key_end])
        if not isinstance(key, str):
            raise ValueError(f"object key at {key_start} is not a string")
        value_start = _skip(text, _expect(text, key_end, ":"))
        value_end, depth = _value_end(text, value_start)
        yield key, value_start, value_end, depth
        position = _skip(text, value_end)
        if text[position : position + 1] == "}":
            return
        position = _expect(text, position, ",")


def _elements(text: str, start: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each element of the array at ``start``."""
    position = _expect(text, start, "[")
    if text[_skip(text, position) : _skip(text, position) + 1] == "]":
        return
    while True:
        element_start = _skip(text, position)
        element_end, _ = _value_end(text, element_start)
        yield element_start, element_end
        position = _skip(text, element_end)
        if text[position : position + 1] == "]":
            return
        position = _expect(text, position, ",")


# --- the envelope and its records ---------------------------------------------------------------------


def _salvage_envelope(text: str) -> dict[str, Any]:
    """The envelope with ``results`` parsed record by record; ValueError when it is not an envelope."""
    start = _skip(text, 0)
    body: dict[str, Any] = {}
    end = start
    for key, value_start, value_end, _ in _members(text, start):
        if key == RESULTS and text[value_start] == "[":
            body[key] = [_record(text[s:e]) for s, e in _elements(text, value_start)]
        else:
            body[key] = loads(text[value_start:value_end])
        end = value_end
    end = _expect(text, end, "}")
    if _skip(text, end) != len(text):
        raise ValueError(f"extra data after the envelope at {end}")
    if RESULTS not in body:
        raise ValueError("no results to read record by record")
    return body


def _record(text: str) -> Any:
    """One record parsed alone, or an UnreadableRecord naming the member that cannot be parsed."""
    try:
        return loads(text)
    except ValueError as exc:
        whole_reason = f"record cannot be read: {_short(exc)}"
    if not text.startswith("{"):
        return UnreadableRecord(text, whole_reason)
    readable: dict[str, Any] = {}
    reason = whole_reason
    try:
        for key, start, end, depth in _members(text, 0):
            try:
                readable[key] = loads(text[start:end])
            except ValueError as exc:
                if reason is whole_reason:
                    name = key if _PLAIN_NAME.fullmatch(key) else repr(key)  # repr escapes a NUL
                    reason = (
                        f"{name} is nested {depth} levels deep, more than Python's JSON parser reads"
                        if isinstance(exc, TooDeep)
                        else f"{name} cannot be read: {_short(exc)}"
                    )
    except ValueError:
        pass  # not even its members can be told apart: the whole record's reason stands
    return UnreadableRecord(text, reason, readable.get("id"), readable.get("part_number"))


def _short(exc: Exception) -> str:
    """The error without Python's advice to the programmer (``...; use sys.set_int_max_str_digits()``)."""
    return str(exc).split("; use sys.")[0]
