"""Bulk requests from CSV, every problem by its line: prices (``sku,account,price[,min_price,max_price]``)
and stock (``sku,account,stock[,warehouse_id]``), read and reported alike.

Each physical line is parsed on its own (a price never needs a newline inside a field), so an unclosed
quote is reported on its own line and cannot swallow the lines after it.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from emag_sync.accounts import Account
from emag_sync.errors import PriceFix, PriceUpdateError
from emag_sync.prices.rules import PriceRequest, make_request
from emag_sync.prices.stock import StockRequest, make_stock_request

CSV_REQUIRED_COLUMNS = ("sku", "account", "price")
CSV_OPTIONAL_COLUMNS = ("min_price", "max_price")
EXPECTED_HEADER = "sku,account,price[,min_price,max_price]"
STOCK_CSV_REQUIRED_COLUMNS = ("sku", "account", "stock")
STOCK_CSV_OPTIONAL_COLUMNS = ("warehouse_id",)
STOCK_EXPECTED_HEADER = "sku,account,stock[,warehouse_id]"
# What Excel on a Romanian Windows writes for "CSV"; named in the error when a file is not UTF-8.
EXCEL_ENCODING = "cp1250"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Byte-order marks, longest first (UTF-32's starts like UTF-16's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass
class CsvProblem:
    """A CSV line that cannot become a request; ``message`` never repeats the line number."""

    line: int
    message: str
    sku: str = ""
    account: str = ""
    fix: PriceFix | None = None


R = TypeVar("R", PriceRequest, StockRequest)


@dataclass
class Parsed(Generic[R]):
    requests: list[R] = field(default_factory=list)
    problems: list[CsvProblem] = field(default_factory=list)


ParsedCsv = Parsed[PriceRequest]
ParsedStockCsv = Parsed[StockRequest]


@dataclass(frozen=True)
class CsvShape:
    """A bulk file's columns: the required ones, the optional ones and the header as messages show it."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    expected: str


PRICE_CSV = CsvShape(CSV_REQUIRED_COLUMNS, CSV_OPTIONAL_COLUMNS, EXPECTED_HEADER)
STOCK_CSV = CsvShape(STOCK_CSV_REQUIRED_COLUMNS, STOCK_CSV_OPTIONAL_COLUMNS, STOCK_EXPECTED_HEADER)


def read_price_file(path: Path, encoding: str | None = None) -> str:
    """The text of a price CSV: UTF-8 (with or without BOM) or UTF-16/32 with a BOM, else ``encoding``.

    Raises PriceUpdateError in one line naming the file, the byte offset and the ``--encoding`` option;
    OSError when the file cannot be read.
    """
    data = path.read_bytes()
    if encoding is not None:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise PriceUpdateError(
                f"--encoding {encoding}: unknown encoding (e.g. utf-8, {EXCEL_ENCODING}, utf-16)"
            ) from None
        return _decode(path, data, codec, given=True)
    codec = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    text = _decode(path, data, codec, given=False)
    nul = data.find(b"\x00")
    if codec == "utf-8" and nul >= 0:  # valid UTF-8, but also what UTF-16 without a byte-order mark is
        raise PriceUpdateError(
            f"{path}: byte {nul} is a NUL byte: the file looks like UTF-16 without a byte-order mark; "
            "give its encoding with --encoding (e.g. --encoding utf-16-le)"
        )
    return text


def _decode(path: Path, data: bytes, codec: str, *, given: bool) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        byte = data[exc.start : exc.start + 1].hex()
        hint = (
            "is that the file's encoding? give the right one with --encoding"
            if given
            else f"give the file's encoding with --encoding (Excel on Romanian Windows: --encoding {EXCEL_ENCODING})"
        )
        raise PriceUpdateError(f"{path}: byte {exc.start} (0x{byte}) is not valid {codec}; {hint}") from None


def parse_price_csv(
    text: str, *, accounts: Mapping[str, Account], allow_large_change: bool = False
) -> ParsedCsv:
    """Rows of ``sku,account,price[,min_price,max_price]``; bad lines reported by their line number.

    Optional columns may be empty, or missing at the end of a row. A SKU listed twice for the same
    account is refused on every line that names it (which price was meant is unknown), valid or not.
    ``allow_large_change`` applies to every row.
    """

    def request(row: Mapping[str, str], number: int) -> PriceRequest:
        return make_request(
            row["sku"], row["account"], row["price"], row.get("min_price"), row.get("max_price"),
            accounts=accounts, line=number, allow_large_change=allow_large_change,
        )  # fmt: skip

    return _parse(text, PRICE_CSV, request)


def parse_stock_csv(text: str, *, accounts: Mapping[str, Account]) -> ParsedStockCsv:
    """Rows of ``sku,account,stock[,warehouse_id]``, read and reported as a price file is (one line each,
    a SKU listed twice for one account refused on every line naming it)."""

    def request(row: Mapping[str, str], number: int) -> StockRequest:
        return make_stock_request(
            row["sku"], row["account"], row["stock"], row.get("warehouse_id"), accounts=accounts, line=number
        )

    return _parse(text, STOCK_CSV, request)


def _parse(text: str, shape: CsvShape, request: Callable[[Mapping[str, str], int], R]) -> Parsed[R]:
    parsed: Parsed[R] = Parsed()
    lines = _LINE_BREAK.split(text.removeprefix("\ufeff"))
    if lines and lines[-1] == "":
        lines.pop()  # the file's final line break
    header_at = next((n for n, line in enumerate(lines, start=1) if line.strip()), None)
    if header_at is None:
        parsed.problems.append(CsvProblem(1, f"the file is empty; expected a header {shape.expected}"))
        return parsed
    header, problem = _cells(lines[header_at - 1])
    columns = [name.strip().lower() for name in header]
    problem = problem or _header_problem(columns, shape)
    if problem:
        parsed.problems.append(CsvProblem(header_at, f"header: {problem}; expected {shape.expected}"))
        return parsed
    named: dict[tuple[str, str], list[int]] = {}  # (sku, account as written) -> lines, valid or not
    for number in range(header_at + 1, len(lines) + 1):
        line = lines[number - 1]
        if not line.strip():
            continue
        cells, problem = _cells(line)
        row = dict(zip(columns, (cell.strip() for cell in cells), strict=False))
        sku, account = row.get("sku", ""), row.get("account", "")
        if sku:
            named.setdefault((sku, account.lower()), []).append(number)
        problem = problem or _shape_problem(columns, cells, shape)
        if problem:
            parsed.problems.append(CsvProblem(number, problem, sku, account))
            continue
        try:
            parsed.requests.append(request(row, number))
        except PriceUpdateError as exc:
            parsed.problems.append(CsvProblem(number, exc.detail, sku, account, exc.fix))
    _refuse_repeats(parsed, named)
    parsed.problems.sort(key=lambda p: p.line)
    return parsed


def _cells(line: str) -> tuple[list[str], str | None]:
    """One physical line's cells, or a problem (an unclosed quote, stray text after a quoted cell)."""
    try:
        return next(csv.reader([line], strict=True), []), None
    except csv.Error as exc:
        if "unexpected end of data" in str(exc) or line.count('"') % 2:
            return [], 'a quote (") is opened and not closed on this line'
        return [], f"cannot read the line as CSV ({exc})"


def _header_problem(columns: list[str], shape: CsvShape) -> str:
    missing = [c for c in shape.required if c not in columns]
    unknown = [c for c in columns if c not in shape.required + shape.optional]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    parts = [
        f"missing column(s) {', '.join(missing)}" if missing else "",
        f"unknown column(s) {', '.join(unknown)}" if unknown else "",
        f"column(s) {', '.join(twice)} appear twice" if twice else "",
    ]
    return "; ".join(part for part in parts if part)


def _shape_problem(columns: list[str], cells: list[str], shape: CsvShape) -> str | None:
    """Too many cells, or a required column missing at the end of the row."""
    if len(cells) > len(columns):
        return f"{len(cells)} cells, but the header has {len(columns)} columns ({','.join(columns)})"
    absent = [c for c in columns[len(cells) :] if c in shape.required]
    if absent:
        return f"missing {', '.join(absent)} (the row has {len(cells)} of the columns {','.join(columns)})"
    return None


def _refuse_repeats(parsed: Parsed[R], named: dict[tuple[str, str], list[int]]) -> None:
    """A SKU named twice for one account: every line naming it is refused, whatever else is wrong."""
    repeated = {line: lines for lines in named.values() if len(lines) > 1 for line in lines}
    if not repeated:
        return

    def listed(line: int) -> str:
        return f"listed on lines {', '.join(str(n) for n in repeated[line])}"

    for problem in parsed.problems:  # refused for their own reason already: say that too
        if problem.line in repeated:
            problem.message += f"; also {listed(problem.line)}"
    kept = []
    for request in parsed.requests:
        if request.line not in repeated:
            kept.append(request)
            continue
        parsed.problems.append(
            CsvProblem(
                request.line,
                f"{listed(request.line)}; keep one line per SKU and account",
                request.sku,
                request.account.name,
            )
        )
    parsed.requests = kept
