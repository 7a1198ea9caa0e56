"""Data-quality results as markdown for people (the Prefect artifacts); the terminal's table is the CLI's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emag_sync.escaping import markdown_link, markdown_text

if TYPE_CHECKING:
    from expectations.results import DQResult

ARTIFACT_KEY_PREFIX = "emag-dq-"


def artifact_key(account: str) -> str:
    """The markdown artifact key of an account, e.g. ``emag-dq-fbe`` (Prefect keys: lowercase and dashes)."""
    return f"{ARTIFACT_KEY_PREFIX}{account}"


def report_link_text(result: DQResult) -> str:
    """What the link to the run's Data Docs page says, e.g. ``Data-quality report fbe, sync run 12: failed``."""
    run = f", sync run {result.run_id}" if result.run_id is not None else ""
    return f"Data-quality report {result.account.name}{run}: {result.status}"


def dq_markdown(result: DQResult) -> str:
    """A table of every expectation: name, severity, pass/fail, observed value (and why it failed).

    Observed values and details quote the data (SKUs, currencies), so every cell is literal text.
    """
    run = f" (sync run {result.run_id})" if result.run_id is not None else ""
    lines = [
        f"## Data quality {result.account.name}{run}: **{result.status}**",
        "",
        markdown_text(result.message),
        "",
        "| expectation | severity | result | observed value | details |",
        "|---|---|---|---|---|",
    ]
    lines += [
        "| "
        + " | ".join(
            markdown_text(cell) for cell in (row.name, row.severity, row.outcome, row.observed, row.details)
        )
        + " |"
        for row in result.rows
    ]
    if result.report_url:
        lines += ["", markdown_link(report_link_text(result), result.report_url)]
    return "\n".join(lines)
