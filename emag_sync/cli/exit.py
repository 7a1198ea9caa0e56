"""How a command ends on an expected failure: one line on stderr, exit 1 (never a traceback)."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """One line on stderr, ``emag-sync: <message>``, exit 1."""
    typer.echo(f"emag-sync: {message}", err=True)
    raise typer.Exit(1)
