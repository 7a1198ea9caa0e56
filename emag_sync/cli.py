"""The ``emag-sync`` command line: sandbox, sync, demo, check, runs, update-price."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="emag-sync",
    help="eMAG Marketplace products and offers into PostgreSQL, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """emag-sync: sync eMAG MAIN and FBE catalogues into PostgreSQL and check what was loaded."""
