"""The Data Docs validation page with data escaped, and UnexpectedRowsExpectation's offending rows shown.

GX (1.24) writes result values into its pages as raw HTML: table cells such as the unexpected values and
the ``sku`` index column are not escaped, so a SKU holding ``<script>`` would run in the reader's browser.
This renderer escapes every value of a result before GX renders it; the stored validation results (JSON)
and the outcomes stay as they were. Escaping in SQL instead would change what the expectations compare.

GX imports this module itself (the site's ``site_section_builders``, see checkpoint.py); our own modules
never do, so importing them does not import GX.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Mapping
from typing import Any

from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer

# GX returns at most 200 rows of an unexpected-rows query (MAX_RESULT_RECORDS); the page lists as many.
MAX_ROWS_SHOWN = 200


def escaped(value: Any) -> Any:
    """Every string inside ``value`` HTML-escaped, dict keys included (column names come from queries)."""
    if isinstance(value, str):
        return html.escape(value, quote=True)
    if isinstance(value, Mapping):
        return {escaped(k): escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(escaped(v) for v in value)
    return value


def with_unexpected_rows(result: Mapping[str, Any]) -> dict[str, Any]:
    """UnexpectedRowsExpectation's rows as GX's "Sampled Unexpected Values" table, which GX leaves out
    for this expectation (its page shows only a count). One line per row, the SKU first:
    ``sku: EMG5 · active_offers: 0``."""
    rows = (result.get("details") or {}).get("unexpected_rows") or []
    if not rows or result.get("partial_unexpected_list"):
        return dict(result)
    lines = []
    for row in rows[:MAX_ROWS_SHOWN]:
        items = sorted(dict(row).items(), key=lambda item: item[0] != "sku")
        lines.append(" · ".join(f"{name}: {value}" for name, value in items))
    # GX's table needs an unexpected_count; 0 keeps off the "N unexpected values, x% of rows" line,
    # which needs a row total this expectation does not have.
    return {**result, "partial_unexpected_list": lines, "unexpected_count": 0}


def with_escaped_tracebacks(info: Mapping[str, Any]) -> dict[str, Any]:
    """An exception_info with its tracebacks escaped: GX puts a traceback into the page as template
    text (raw), and it can quote data. The message is a template parameter, which GX escapes itself.
    The info is one exception, or one per metric (``{metric id: exception}``)."""
    if "exception_traceback" in info:
        return {**info, "exception_traceback": escaped(info["exception_traceback"])}
    return {key: with_escaped_tracebacks(v) if isinstance(v, Mapping) else v for key, v in info.items()}


class EscapingValidationResultsPageRenderer(ValidationResultsPageRenderer):
    """GX's validation page, rendered from a copy whose result values and tracebacks are escaped."""

    def render(self, validation_results: Any, suite_parameters: Any = None) -> Any:
        results = copy.deepcopy(validation_results)
        for outcome in results.results:
            if outcome.result:
                outcome.result = escaped(with_unexpected_rows(outcome.result))
            if outcome.exception_info:
                outcome.exception_info = with_escaped_tracebacks(outcome.exception_info)
        return super().render(results, suite_parameters=suite_parameters)
