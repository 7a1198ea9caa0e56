"""This checkpoint run's own page in the Data Docs site: every expectation's row and links to GX's pages.

GX has a page per validation (one per asset) but none per checkpoint run, and the run's link artifact
needs one address. Everything from the data is HTML-escaped; the links are relative, so the site can be
served from any base URL (or opened as files).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from emag_sync.accounts import Account

if TYPE_CHECKING:
    from expectations.results import DQRow

# The site's folder of run pages: runs/emag_<account>/<run name>/<run time>/index.html.
RUNS_SECTION = "runs"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; max-width: 1400px; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr.fail.critical td { background: #fde2e2; }
tr.fail.warning td { background: #fff4d6; }
tr.na td { color: #777; }
.status-failed { color: #b00020; } .status-warning { color: #8a6100; } .status-passed { color: #1b7f3b; }
"""

_ROW_CLASS = {"pass": "pass", "FAIL": "fail", "n/a": "na"}


@dataclass(frozen=True)
class ValidationPage:
    """One of GX's validation pages of the run: its site-relative path, its suite, and whether it passed."""

    path: str
    suite: str
    success: bool


def run_page_path(account: Account, run_name: str, run_time: str) -> str:
    """The page's path relative to the site root (``run_time`` as GX writes it, 20260101T120000.000000Z)."""
    return f"{RUNS_SECTION}/emag_{account.name}/{run_name}/{run_time}/index.html"


def write_run_page(
    site: Path,
    relative_path: str,
    *,
    title: str,
    status: str,
    message: str,
    checked_at: datetime,
    rows: Sequence[DQRow],
    validations: Sequence[ValidationPage],
) -> Path:
    """Write the page at ``site / relative_path``; returns the file."""
    e = html.escape
    up = "../" * relative_path.count("/")
    body_rows = "".join(
        f'<tr class="{_ROW_CLASS[row.outcome]} {e(row.severity)}"><td>{e(row.name)}</td><td>{e(row.severity)}</td>'
        f"<td>{e(row.outcome)}</td><td>{e(row.observed)}</td><td>{e(row.details)}</td></tr>\n"
        for row in rows
    )
    links = "".join(
        f'<li><a href="{e(up + page.path)}">{e(page.suite)}</a>: {"passed" if page.success else "failed"}</li>\n'
        for page in validations
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}: {e(status)}</title><style>{_STYLE}</style></head>
<body>
<h1>{e(title)}: <span class="status-{e(status)}">{e(status)}</span></h1>
<p>{e(message)}</p>
<p>Checked {checked_at:%Y-%m-%d %H:%M:%S} UTC. <a href="{up}index.html">All suites and runs (Data Docs index)</a></p>
<table>
<tr><th>expectation</th><th>severity</th><th>result</th><th>observed value</th><th>details</th></tr>
{body_rows}</table>
<h2>Great Expectations validation results</h2>
<ul>
{links}</ul>
</body></html>
"""
    path = site / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
