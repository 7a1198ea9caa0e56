"""The run summary: a markdown table per flow run (Prefect artifact) built from account summaries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tasks.sync_account import AccountSummary

SUMMARY_ARTIFACT_KEY = "emag-sync-summary"
_COLUMNS = (
    ("account", "account"),
    ("status", "status"),
    ("dq", "data quality"),
    ("expected_items", "eMAG count"),
    ("inserted", "inserted"),
    ("updated", "updated"),
    ("unchanged", "unchanged"),
    ("rejected", "rejected"),
    ("deactivated", "deactivated"),
    ("pages", "pages"),
    ("api_requests", "requests"),
    ("rate_limited", "429s"),
    ("duration_seconds", "seconds"),
)


def summary_markdown(
    summaries: Sequence[AccountSummary], dq_status: Mapping[str, str], failures: Mapping[str, str]
) -> str:
    """One row per account, then the failures with their causes."""
    header = "| " + " | ".join(title for _, title in _COLUMNS) + " |"
    lines = ["# eMAG product sync", "", header, "|" + "---|" * len(_COLUMNS)]
    for summary in summaries:
        values = summary.as_dict() | {"dq": dq_status.get(summary.account, "not run")}
        if isinstance(values["duration_seconds"], float):
            values["duration_seconds"] = f"{values['duration_seconds']:.1f}"
        if summary.resumed:
            values["status"] = f"{values['status']} (resumed)"
        lines.append("| " + " | ".join(str(values[key]) for key, _ in _COLUMNS) + " |")
    for account, error in failures.items():
        lines += ["", f"**{account}: failed** — {error}"]
    return "\n".join(lines) + "\n"


def publish_summary(markdown: str) -> None:
    """Attach the summary to the current flow run (visible on its Artifacts tab)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=SUMMARY_ARTIFACT_KEY, description="eMAG sync summary")
