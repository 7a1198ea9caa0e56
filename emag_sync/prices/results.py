"""What an offer update (price or stock) ended as, in the words the terminal, the flows' logs and the
Prefect table show: one verdict per request, the result table's rows, one-line failures and a summary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from emag_sync.accounts import AccountType
from emag_sync.errors import PARAMETER_FIXES, PriceFix, with_fix
from emag_sync.prices.audit import Answer, Found, Status
from emag_sync.prices.csv_input import CsvProblem
from emag_sync.prices.rules import PriceRequest, money_text
from emag_sync.prices.stock import StockRequest

RESULT_COLUMNS = (
    "line", "sku", "account", "old price", "new price", "currency", "status", "eMAG answer", "re-read",
    "message",
)  # fmt: skip
STOCK_RESULT_COLUMNS = (
    "line", "sku", "account", "warehouse", "old stock", "new stock", "status", "eMAG answer", "re-read",
    "message",
)  # fmt: skip


@dataclass
class PriceUpdateResult:
    """The verdict for one request (a price or a stock): what happened, and what eMAG and the database
    now hold."""

    request: PriceRequest | StockRequest
    status: Status
    message: str  # without the fix: each caller words that in its own terms
    old_price: Decimal | None = None
    new_price: Decimal | None = None
    currency: str | None = None
    emag_offer_id: int | None = None
    audit_id: int | None = None
    answer: Answer | None = None
    found: Found | None = None
    fix: PriceFix | None = None
    old_stock: int | None = None
    new_stock: int | None = None
    warehouse_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "applied"

    def text(self, fixes: Mapping[PriceFix, str] = PARAMETER_FIXES) -> str:
        """The message with its fix in the caller's terms."""
        return with_fix(self.message, self.fix, fixes)

    def as_row(self, fixes: Mapping[PriceFix, str] = PARAMETER_FIXES) -> dict[str, str]:
        """One row of the result table (strings, so it renders the same on the terminal and in Prefect)."""
        values = (
            {
                "warehouse": _plain(self.warehouse_id or self.request.warehouse_id),
                "old stock": _plain(self.old_stock),
                "new stock": str(self.request.stock),
            }
            if isinstance(self.request, StockRequest)
            else {
                "old price": money_text(self.old_price),
                "new price": money_text(self.new_price),
                "currency": self.currency or "",
            }
        )
        return {
            "line": "" if self.request.line is None else str(self.request.line),
            "sku": self.request.sku,
            "account": self.request.account.label,
            **values,
            "status": self.status,
            "eMAG answer": self.answer or "",
            "re-read": self.found or "",
            "message": self.text(fixes),
        }


def _plain(value: int | None) -> str:
    return "" if value is None else str(value)


def result_rows(
    results: Iterable[PriceUpdateResult],
    problems: Iterable[CsvProblem] = (),
    fixes: Mapping[PriceFix, str] = PARAMETER_FIXES,
    columns: Sequence[str] = RESULT_COLUMNS,
) -> list[dict[str, str]]:
    """Every line's verdict as table rows (malformed CSV lines included), in file order."""
    rows = [result.as_row(fixes) for result in results]
    rows += [
        dict.fromkeys(columns, "")
        | {
            "line": str(p.line),
            "sku": p.sku,
            "account": p.account.upper(),
            "status": "invalid",
            "message": with_fix(p.message, p.fix, fixes),
        }
        for p in problems
    ]
    return sorted(rows, key=lambda row: int(row["line"] or 0))


def failure_line(row: Mapping[str, str]) -> str:
    """One result row as one line: ``line 7: EMG469 on eMAG FBE: invalid: <message>``."""
    at = f"line {row['line']}: " if row["line"] else ""
    known = row["account"] in {account.label for account in AccountType}
    subject = f"{row['sku']} on eMAG {row['account']}" if row["sku"] and known else row["sku"]
    return f"{at}{subject + ': ' if subject else ''}{row['status']}: {row['message']}"


def summary(rows: Sequence[Mapping[str, str]]) -> str:
    """'3 applied, 1 invalid' for logs and the artifact description."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to do"
