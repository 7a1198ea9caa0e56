"""Data-quality results as markdown for people (the Prefect artifacts); the terminal's table is the CLI's."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from expectations.checkpoint import DQResult

ARTIFACT_KEY_PREFIX = "emag-dq-"


def artifact_key(account: str) -> str:
    """The markdown artifact key of an account, e.g. ``emag-dq-fbe`` (Prefect keys: lowercase and dashes)."""
    return f"{ARTIFACT_KEY_PREFIX}{account}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def dq_markdown(result: DQResult) -> str:
    """A table of every expectation: name, severity, pass/fail, observed value (and why it failed)."""
    run = f" (sync run {result.run_id})" if result.run_id is not None else ""
    lines = [
        f"## Data quality {result.account.value}{run}: **{result.status}**",
        "",
        _cell(result.message),
        "",
        "| expectation | severity | result | observed value | details |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {row.name} | {row.severity} | {row.outcome} | {_cell(row.observed)} | {_cell(row.details)} |"
        for row in result.rows
    ]
    lines += ["", f"Data Docs: `{result.data_docs_index}`"]
    return "\n".join(lines)
