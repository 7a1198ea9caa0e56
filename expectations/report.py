"""Data-quality results for people: a markdown table, Prefect artifacts, and a rich table for the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

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


def publish_dq_artifacts(result: DQResult) -> None:
    """Inside a Prefect flow or task run: a markdown artifact per account and a link to the Data Docs."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return  # a plain call (CLI, tests): nothing to attach the artifacts to
    account = result.account.value
    create_markdown_artifact(
        markdown=dq_markdown(result),
        key=artifact_key(account),
        description=f"Data-quality checkpoint of {account}: {result.status}",
    )
    create_link_artifact(
        link=result.data_docs_index.as_uri(),
        link_text=f"Great Expectations Data Docs ({account})",
        key=f"{artifact_key(account)}-docs",
        description=f"Data Docs of the {account} checkpoint (a file on the machine that ran it)",
    )


def dq_table(result: DQResult) -> Table:
    """The rows as a rich table for the terminal."""
    from rich.markup import escape
    from rich.table import Table

    styles = {"pass": "green", "FAIL": "red", "n/a": "dim"}
    table = Table(title=f"Data quality {result.account.value}: {result.status}", title_justify="left")
    for column in ("expectation", "severity", "result", "observed value"):
        table.add_column(column)
    for row in result.rows:
        style = styles[row.outcome] if row.severity == "critical" or row.passed is not False else "yellow"
        table.add_row(row.name, row.severity, f"[{style}]{row.outcome}[/]", escape(row.observed))
    return table
