"""``emag-sync accounts``: the account registry (``app.emag_accounts``) from the command line.

An account is a row: its name, seller, platform, kind, an optional API URL and its pace. Its credentials
are never stored; they are found by its name (EMAG_<NAME>_USERNAME / _PASSWORD, .env, or the Prefect
Secret blocks emag-<name>-username / -password), and these commands say where, never the value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich import box
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine, func, select

from emag_sync.cli.exit import fail
from emag_sync.cli.output import Listing, OutputFormat, format_option, show
from emag_sync.errors import EmagSyncError
from emag_sync.platforms import PLATFORMS

accounts_app = typer.Typer(
    name="accounts",
    help="The registered eMAG accounts: add, list, test, enable, disable, remove (credentials are found by "
    "name, never stored).",
    no_args_is_help=True,
)

LIST_COLUMNS = (
    "name", "kind", "platform", "seller", "enabled", "removed_at", "credentials", "api_url", "requests_per_second",
    "last_sync", "last_status", "active_offers",
)  # fmt: skip


@contextmanager
def _engine() -> Iterator[Engine]:
    from emag_sync.db import engine_from_settings
    from emag_sync.settings import get_settings

    try:
        engine = engine_from_settings(get_settings())
    except EmagSyncError as exc:
        fail(str(exc))
    try:
        yield engine
    except EmagSyncError as exc:
        fail(str(exc))
    finally:
        engine.dispose()


@accounts_app.command("add")
def add(
    name: str = typer.Argument(..., help="a slug: a-z, 0-9 and '-', e.g. ro-fbe or acme-bg-main"),
    platform: str = typer.Option(..., "--platform", help=", ".join(PLATFORMS)),
    kind: str = typer.Option(..., "--kind", help="main (the seller ships) or fbe (Fulfilled by eMAG)"),
    seller: str | None = typer.Option(
        None, "--seller", help="who the account belongs to (free text, for grouping)"
    ),
    api_url: str | None = typer.Option(
        None, "--api-url", help="instead of the platform's API URL (a proxy, the sandbox)"
    ),
    requests_per_second: float | None = typer.Option(
        None, "--requests-per-second", help="the account's pace [default: eMAG's 3]"
    ),
) -> None:
    """Register an account; then set its credentials (EMAG_<NAME>_USERNAME / _PASSWORD) and `accounts test` it."""
    from emag_sync.registry import add_account

    with _engine() as engine:
        account = add_account(
            engine, name, platform=platform, kind=kind, seller=seller, api_url=api_url,
            requests_per_second=requests_per_second,
        )  # fmt: skip
    typer.echo(
        f"account {account.name} registered: {account.kind.value} on {account.platform.name}"
        + (f", seller {account.seller}" if account.seller else "")
        + f"; its credentials: {account.env_prefix}_USERNAME and {account.env_prefix}_PASSWORD "
        f"(or Prefect Secret blocks emag-{account.name}-username / -password)"
    )


@accounts_app.command("list")
def list_command(
    all_: bool = typer.Option(False, "--all", help="removed accounts too (their rows are kept)"),
    output: OutputFormat = format_option(),
) -> None:
    """Every registered account: kind, platform, seller, enabled, where its credentials were found (or that
    they are missing), its last sync and status, and its active offers."""
    from emag_sync.api.credentials import credential_sources
    from emag_sync.registry import list_accounts
    from emag_sync.schema import offers, sync_runs
    from emag_sync.settings import get_settings

    settings = get_settings()
    with _engine() as engine:
        registered = list_accounts(engine, include_removed=all_)
        with engine.connect() as conn:
            latest = select(sync_runs.c.account, func.max(sync_runs.c.id).label("id")).group_by(
                sync_runs.c.account
            )
            last_ids = {row.account: row.id for row in conn.execute(latest)}
            runs = {
                row.account: row
                for row in conn.execute(
                    select(sync_runs.c.account, sync_runs.c.status, sync_runs.c.started_at).where(
                        sync_runs.c.id.in_(list(last_ids.values()) or [0])
                    )
                )
            }
            counted = (
                select(offers.c.account, func.count()).where(offers.c.is_active).group_by(offers.c.account)
            )
            active: dict[str, int] = {row[0]: row[1] for row in conn.execute(counted).tuples()}
    records = []
    for account in registered:
        sources = credential_sources(settings, account)
        missing = [field for field, source in sources.items() if source is None]
        credentials = (
            f"missing {' and '.join(f'{account.env_prefix}_{field.upper()}' for field in missing)}"
            if missing
            else "; ".join(f"{field} from {source}" for field, source in sources.items())
        )
        run = runs.get(account.name)
        records.append(
            {
                "name": account.name,
                "kind": account.kind.value,
                "platform": account.platform.code,
                "seller": account.seller,
                "enabled": account.enabled if account.removed_at is None else False,
                "removed_at": account.removed_at,
                "credentials": credentials,
                "api_url": settings.api_url_for(account),
                "requests_per_second": settings.rate_for(account)[0],
                "last_sync": run.started_at if run else None,
                "last_status": ("removed" if account.removed_at else run.status if run else None),
                "active_offers": active.get(account.name, 0),
            }
        )
    table = Table(title="Accounts", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for column in (
        "name",
        "kind",
        "platform",
        "seller",
        "enabled",
        "credentials",
        "last sync UTC",
        "status",
        "active offers",
    ):
        table.add_column(column, justify="right" if column == "active offers" else "left")
    for record in records:
        last = record["last_sync"]
        table.add_row(
            Text(str(record["name"])), str(record["kind"]), str(record["platform"]), Text(str(record["seller"] or "")),
            "removed" if record["removed_at"] else "yes" if record["enabled"] else "no",
            Text(str(record["credentials"])),
            f"{last:%Y-%m-%d %H:%M}" if last else "never", Text(str(record["last_status"] or "")),
            str(record["active_offers"]),
        )  # fmt: skip
    notes = (
        [] if records else ["no account registered yet: `emag-sync accounts add NAME --platform P --kind K`"]
    )
    if notes:
        table.caption = notes[0]
    show([Listing(LIST_COLUMNS, records, table, notes)], output)


@accounts_app.command("test")
def test(name: str = typer.Argument(..., help="the account's name")) -> None:
    """One product_offer/count on the account: `NAME: ok, N offers on eMAG ...`, or the reason, exit 1."""
    from emag_sync.cli.console import terminal_owns_console

    terminal_owns_console()  # the answer is this command's one line, not Prefect's log lines
    from emag_sync.api.credentials import resolve_account_config
    from emag_sync.registry import get_account, unknown_account
    from emag_sync.settings import get_settings
    from tasks.preflight import check_api

    settings = get_settings()
    with _engine() as engine:
        account = get_account(engine, name)
        if account is None or account.removed_at is not None:
            raise unknown_account(engine, name)
        config = resolve_account_config(settings, account)
        count = check_api(settings, config)
    disabled = "" if account.enabled else " (disabled: `--account all` leaves it out)"
    typer.echo(
        f"{account.title}: ok, {count.items} offers on {account.platform.name} ({settings.api_url_for(account)})"
        + disabled
    )


@accounts_app.command("enable")
def enable(name: str = typer.Argument(..., help="the account's name")) -> None:
    """Sync the account again with `--account all` and let it be named."""
    from emag_sync.registry import set_enabled

    with _engine() as engine:
        account = set_enabled(engine, name, True)
    typer.echo(f"account {account.name}: enabled")


@accounts_app.command("disable")
def disable(name: str = typer.Argument(..., help="the account's name")) -> None:
    """Leave the account out of `--account all` and refuse it by name; its rows stay as they are."""
    from emag_sync.registry import set_enabled

    with _engine() as engine:
        account = set_enabled(engine, name, False)
    typer.echo(
        f"account {account.name}: disabled (its rows are kept; `emag-sync accounts enable {account.name}`)"
    )


@accounts_app.command("remove")
def remove(
    name: str = typer.Argument(..., help="the account's name"),
    keep_data: bool = typer.Option(
        False,
        "--keep-data",
        help="remove an account that has rows: they are kept, its products and offers inactive",
    ),
) -> None:
    """Remove an account. Refused while it has rows unless --keep-data; nothing is ever deleted silently."""
    from emag_sync.registry import remove_account

    with _engine() as engine:
        held = remove_account(engine, name, keep_data=keep_data)
    if held.empty:
        typer.echo(f"account {name}: removed (it had no rows)")
    else:
        typer.echo(
            f"account {name}: removed; its {held.products} products, {held.offers} offers, {held.runs} runs and "
            f"{held.price_updates} price updates are kept (products and offers inactive)"
        )
