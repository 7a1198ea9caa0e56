"""Bulk price requests from CSV text: ``sku,account,price[,min_price,max_price]``, problems by line."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from emag_sync.accounts import AccountType
from emag_sync.errors import PriceUpdateError
from emag_sync.prices.rules import PriceRequest, make_request

CSV_REQUIRED_COLUMNS = ("sku", "account", "price")
CSV_OPTIONAL_COLUMNS = ("min_price", "max_price")


@dataclass
class CsvProblem:
    """A CSV line that cannot become a request."""

    line: int
    message: str
    sku: str = ""
    account: str = ""


@dataclass
class ParsedCsv:
    requests: list[PriceRequest] = field(default_factory=list)
    problems: list[CsvProblem] = field(default_factory=list)


def parse_price_csv(text: str) -> ParsedCsv:
    """Rows of ``sku,account,price[,min_price,max_price]``; bad lines reported by their line number.

    A SKU listed twice for the same account is refused on every line: which price was meant is unknown.
    """
    parsed = ParsedCsv()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None:
        parsed.problems.append(CsvProblem(1, "the file is empty; expected a header sku,account,price"))
        return parsed
    columns = [name.strip().lower() for name in header]
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS]
    if missing or unknown or len(set(columns)) != len(columns):
        detail = "; ".join(
            part
            for part in (
                f"missing column(s) {', '.join(missing)}" if missing else "",
                f"unknown column(s) {', '.join(unknown)}" if unknown else "",
                "a column appears twice" if len(set(columns)) != len(columns) else "",
            )
            if part
        )
        parsed.problems.append(
            CsvProblem(1, f"header: {detail}; expected sku,account,price[,min_price,max_price]")
        )
        return parsed
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        row = dict(zip(columns, cells, strict=False))
        sku, account = row.get("sku", "").strip(), row.get("account", "").strip()
        if len(cells) != len(columns):
            message = f"line {line}: expected {len(columns)} columns ({','.join(columns)}), got {len(cells)}"
            parsed.problems.append(CsvProblem(line, message, sku, account))
            continue
        try:
            parsed.requests.append(
                make_request(
                    sku, account, row["price"], row.get("min_price"), row.get("max_price"), line=line
                )
            )
        except PriceUpdateError as exc:
            parsed.problems.append(CsvProblem(line, str(exc), sku, account))
    lines: dict[tuple[str, AccountType], list[int]] = {}
    for request in parsed.requests:
        lines.setdefault((request.sku, request.account), []).append(request.line or 0)
    for request in [r for r in parsed.requests if len(lines[(r.sku, r.account)]) > 1]:
        parsed.requests.remove(request)
        others = ", ".join(str(n) for n in lines[(request.sku, request.account)])
        parsed.problems.append(
            CsvProblem(
                request.line or 0,
                f"{request.where}: listed on lines {others}; keep one line per SKU and account",
                request.sku,
                request.account.value,
            )
        )
    parsed.problems.sort(key=lambda p: p.line)
    return parsed
