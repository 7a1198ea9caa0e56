"""What a sync run's row holds: its statuses, one batch's counts, the run's figures and the labels people
read them by (the terminal's tables and the summary artifact share them). ``emag_sync.runs`` owns the
rows themselves."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Row

from emag_sync.accounts import AccountType
from emag_sync.schema import sync_runs


class RunStatus(StrEnum):
    """The status column of a sync run."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Its process died (killed, crashed, or lost the database) without recording how the run ended.
    CRASHED = "crashed"
    # The operator stopped it (Ctrl-C, SIGTERM) at a batch boundary; --resume continues it.
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"


class DqStatus(StrEnum):
    """A run's data-quality outcome (null until checked)."""

    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"


UNFINISHED = (RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CRASHED, RunStatus.INTERRUPTED)

# The run's figures as people read them, in the order they are shown, one label per column: shared by
# the terminal's tables and the run summary artifact.
COUNTER_LABELS: dict[str, str] = {
    "expected_items": "eMAG count",
    "rows_inserted": "inserted",
    "rows_updated": "updated",
    "rows_unchanged": "unchanged",
    "rows_rejected": "rejected",
    "rows_deactivated": "deactivated",
    "pages_read": "pages",
    "api_requests": "requests",
    "rate_limited": "429s",
    "retries": "retries",
    "duration_seconds": "seconds",
}


@dataclass(frozen=True)
class BatchCounts:
    """What one batch did, counted per record (a product and its offer are one record).

    ``updated`` is a record whose product or offer changed; ``duplicates`` are records already loaded
    earlier in this run or repeated inside the batch; ``rejected`` includes the transform's rejects;
    ``loaded`` the distinct records new to the run's seen set; ``read`` every record received; ``pages``
    the catalogue pages the batch held (none for offers read by id).
    """

    pages: int
    read: int
    loaded: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    duplicates: int


# The summary artifact shows them in two tables that fit a browser: what the read found, what it cost.
FOUND_FIGURES = (
    "expected_items",
    "rows_inserted",
    "rows_updated",
    "rows_unchanged",
    "rows_rejected",
    "rows_deactivated",
)
COST_FIGURES = tuple(column for column in COUNTER_LABELS if column not in FOUND_FIGURES)


@dataclass(frozen=True)
class RunRow:
    """One row of app.emag_sync_runs (field names are the column names)."""

    id: int
    account_type: str  # the account's kind
    account: str  # the account's name (app.emag_accounts)
    flow_run_id: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: Decimal | None
    items_per_page: int
    pages_per_batch: int
    expected_items: int | None
    expected_pages: int | None
    last_committed_page: int
    pages_read: int
    batches_committed: int
    records_read: int
    records_loaded: int
    duplicates_skipped: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    rows_deactivated: int
    api_requests: int
    rate_limited: int
    retries: int
    resumed_count: int
    dq_status: str | None
    dq_results: dict[str, Any] | None
    error: str | None

    @classmethod
    def from_row(cls, row: Row[Any]) -> RunRow:
        return cls(**row._mapping)

    @property
    def kind(self) -> AccountType:
        return AccountType(self.account_type)

    @property
    def status_text(self) -> str:
        """The status as shown to people: ``succeeded (resumed)`` for a run that needed a rerun."""
        return self.status + (" (resumed)" if self.resumed_count else "")

    def figure(self, column: str) -> str:
        """One of COUNTER_LABELS's figures as text: seconds with a decimal, pages as done/announced."""
        if column == "duration_seconds":
            return f"{float(self.duration_seconds or 0):.1f}"
        if column == "pages_read":
            return f"{self.pages_read}/{self.expected_pages or 0}"
        value = getattr(self, column)
        return str(value if value is not None else 0)


assert [f.name for f in fields(RunRow)] == [c.name for c in sync_runs.columns], "RunRow drifted from schema"
