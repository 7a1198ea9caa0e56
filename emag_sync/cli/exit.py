"""How a command ends on an expected failure: one line on stderr, exit 1 (a bad setting: 2), never a traceback."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """One line on stderr, ``emag-sync: <message>``, exit 1."""
    typer.echo(f"emag-sync: {message}", err=True)
    raise typer.Exit(1)


# A setting the environment gives a value it cannot take is a usage error, as click's bad options are.
BAD_SETTING_EXIT = 2


def check_settings() -> None:
    """Read the settings once before any command runs: a bad value is one line, exit 2, nothing done."""
    from emag_sync.errors import ConfigError
    from emag_sync.settings import get_settings

    try:
        get_settings()
    except ConfigError as exc:
        typer.echo(f"emag-sync: {exc}", err=True)
        raise typer.Exit(BAD_SETTING_EXIT) from None
