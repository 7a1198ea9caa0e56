"""What a listing command prints (``--format``): a table for people, or TSV/JSON of the raw values for
scripts. Data goes to stdout, notes to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any

import typer
from rich.table import Table


class OutputFormat(StrEnum):
    """How a listing is printed."""

    TABLE = "table"
    TSV = "tsv"
    JSON = "json"


def format_option() -> Any:
    """The ``--format`` option every listing command takes (one declaration, one help text)."""
    return typer.Option(
        OutputFormat.TABLE,
        "--format",
        case_sensitive=False,
        help="table (for people), tsv (a header line, tabs and newlines in values escaped as \\t, \\n) or "
        "json (a list of objects, raw values); data on stdout, notes on stderr",
    )


@dataclass(frozen=True)
class Listing:
    """Rows under named columns, as a script reads them (raw values), and the table a person reads."""

    columns: Sequence[str]
    records: Sequence[Mapping[str, object]]
    table: Table
    # Said beside the data in TSV and JSON (on stderr); the table shows them as its caption.
    notes: Sequence[str] = field(default_factory=tuple)


def show(listings: Sequence[Listing], output: OutputFormat) -> None:
    """Print ``listings``: their tables, their rows as TSV (one header) or as one JSON list."""
    if output is OutputFormat.TABLE:
        from emag_sync.cli.console import console

        for listing in listings:
            console.print(listing.table)
        return
    if output is OutputFormat.JSON:
        records = [dict(record) for listing in listings for record in listing.records]
        sys.stdout.write(json.dumps(records, default=json_value, ensure_ascii=False, indent=1) + "\n")
    else:
        columns = listings[0].columns if listings else ()
        lines = ["\t".join(tsv_cell(name) for name in columns)]
        for listing in listings:
            lines += ["\t".join(tsv_cell(record.get(name)) for name in columns) for record in listing.records]
        sys.stdout.write("\n".join(lines) + "\n")
    for listing in listings:
        for note in listing.notes:
            typer.echo(note, err=True)


def json_value(value: object) -> object:
    """JSON for what ``json`` cannot write: Decimal as its exact text, datetimes ISO 8601 in UTC."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_cell(value: object) -> str:
    """One TSV value: empty for null, lists and objects as JSON, backslash, tab and newlines escaped (as
    PostgreSQL's COPY text format does), so a value never splits a row or a line."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, Mapping | list):
        text = json.dumps(value, default=json_value, ensure_ascii=False)
    else:
        plain = json_value(value) if not isinstance(value, str | int | float) else value
        text = str(plain)
    return text.translate(_TSV_ESCAPES)
