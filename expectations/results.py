"""What a data-quality checkpoint found: one row per expectation, the account's verdict, and the facts
(the run row, the active product count) its failure messages name. Free of Great Expectations, so the
flow, the report and the terminal can read a result without importing it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emag_sync.accounts import Account
from emag_sync.run_row import DqStatus
from expectations.suites import MAX_LISTED_SKUS, RUN, Check, Severity


@dataclass(frozen=True)
class DQRow:
    """The outcome of one expectation. ``passed`` is None when it did not apply (no sync run yet)."""

    name: str
    severity: Severity
    passed: bool | None
    observed: str
    details: str = ""

    @property
    def outcome(self) -> str:
        return "n/a" if self.passed is None else "pass" if self.passed else "FAIL"


@dataclass(frozen=True)
class DQResult:
    """One account's checkpoint: every expectation's outcome, the overall status and its Data Docs.

    ``report_page`` is this checkpoint's own page in the site and ``report_url`` its address under
    EMAG_SYNC_DATA_DOCS_URL; ``data_docs_index`` is the site's index (every suite and run).
    """

    account: Account
    status: DqStatus
    rows: list[DQRow]
    data_docs_index: Path
    run_id: int | None = None
    report_page: Path | None = None
    report_url: str | None = None

    @property
    def critical_failures(self) -> list[DQRow]:
        return [r for r in self.rows if r.passed is False and r.severity == "critical"]

    @property
    def warnings(self) -> list[DQRow]:
        return [r for r in self.rows if r.passed is False and r.severity == "warning"]

    @property
    def message(self) -> str:
        """Critical failures (else warnings), each naming the expectation's observed values."""
        failing = self.critical_failures or self.warnings
        if not failing:
            skipped = sum(row.passed is None for row in self.rows)
            note = f" ({skipped} not applicable)" if skipped else ""
            return f"{self.account.name}: all {len(self.rows) - skipped} expectations passed{note}"
        return "; ".join(dict.fromkeys(f"{self.account.name}: {row.details}" for row in failing))

    def as_json(self) -> dict[str, Any]:
        """Plain JSON: what the run-history row stores in ``dq_results``."""
        return {
            "account": self.account.name,
            "status": self.status,
            "message": self.message,
            "run_id": self.run_id,
            "data_docs_index": str(self.data_docs_index),
            "report_page": str(self.report_page) if self.report_page else None,
            "report_url": self.report_url,
            "rows": [asdict(row) for row in self.rows],
        }


@dataclass(frozen=True)
class Facts:
    """What the checkpoint needs besides GX: the active product count and the run row, read once."""

    active_products: int
    run_id: int | None
    run: Mapping[str, Any] | None
    run_missing: bool = False


def row_of(check: Check, outcome: Any, facts: Facts) -> DQRow:
    """One report row from a GX result; run checks without a run are not applicable."""
    if outcome is None and facts.run_missing:
        # A run id that is not in the history cannot be complete; the reject share then does not apply.
        passed = False if check.severity == "critical" else None
        return DQRow(
            check.name, check.severity, passed, "no such run", f"run {facts.run_id} is not in the run history"
        )
    if outcome is None:
        return DQRow(check.name, check.severity, None, "not applicable", "no succeeded sync run yet")
    message = _raised(outcome.exception_info)
    if message is not None:
        return DQRow(check.name, check.severity, False, "error", f"{check.name} could not run: {message}")
    values = _values(outcome.result or {}, facts)
    observed = _observed(check, values)
    details = "" if outcome.success else check.failure.format_map(values)
    return DQRow(check.name, check.severity, bool(outcome.success), observed, details)


def _raised(info: Any) -> str | None:
    """The first line of the error GX met running an expectation, if it met one. GX reports it as one
    exception info, or (a query or metric that failed) as one per metric it could not compute."""
    if not isinstance(info, Mapping) or not info:
        return None
    found = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, Mapping)]
    for each in found:
        if each.get("raised_exception"):
            text = str(each.get("exception_message") or "GX raised an error").strip()
            return text.splitlines()[0] if text else "GX raised an error"
    return None


def _values(result: Mapping[str, Any], facts: Facts) -> dict[str, Any]:
    """Everything a failure template may name, from a GX result and the run row."""
    run = facts.run or {}
    seen = (run.get("records_loaded") or 0) + (run.get("rows_rejected") or 0)
    expected_items = run.get("expected_items")
    share_base = max(expected_items or 0, seen)
    rows = (result.get("details") or {}).get("unexpected_rows") or []
    skus = _skus(result, rows)
    if result.get("unexpected_count") is not None:
        count = int(result["unexpected_count"])
    elif "details" in result:  # UnexpectedRowsExpectation: the observed value is the offending row count
        count = int(result.get("observed_value") or 0)
    else:
        count = len(skus)
    return {
        "observed": result.get("observed_value"),
        "expected": facts.active_products,
        "unexpected": count,
        "total": result.get("element_count"),
        "skus": _sku_list(skus, count),
        "run_id": facts.run_id,
        "expected_items": expected_items,
        "records_loaded": run.get("records_loaded"),
        "rows_rejected": run.get("rows_rejected"),
        "rows_deactivated": run.get("rows_deactivated"),
        "reject_share": f"{(run.get('rows_rejected') or 0) / share_base:.2%}" if share_base else "n/a",
    }


def _skus(result: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    found = [row.get("sku") for row in rows]
    for key in ("partial_unexpected_index_list", "partial_unexpected_list"):
        found += [item.get("sku") for item in result.get(key) or [] if isinstance(item, Mapping)]
    return list(dict.fromkeys(str(sku) for sku in found if sku is not None))


def _sku_list(skus: list[str], count: int) -> str:
    listed = skus[:MAX_LISTED_SKUS]
    more = count - len(listed)
    text = ", ".join(listed) if listed else "(no SKU)"
    return f"{text} (+{more} more)" if more > 0 else text


def _observed(check: Check, values: Mapping[str, Any]) -> str:
    """A short observed value for tables: the count the expectation measured."""
    if check.expectation == "ExpectTableRowCountToEqual":
        return f"{values['observed']} active offers, {values['expected']} active products"
    if check.asset == RUN:
        return (
            f"loaded {values['records_loaded']} + rejected {values['rows_rejected']}"
            f" of eMAG count {values['expected_items']} (rejected {values['reject_share']})"
        )
    if values["total"] is not None:
        return f"{values['unexpected']} of {values['total']} rows unexpected"
    return f"{values['unexpected']} offending rows"


def status_of(rows: Iterable[DQRow]) -> DqStatus:
    rows = list(rows)
    if any(r.passed is False and r.severity == "critical" for r in rows):
        return DqStatus.FAILED
    if any(r.passed is False for r in rows):
        return DqStatus.WARNING
    return DqStatus.PASSED
