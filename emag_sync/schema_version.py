"""The schema's version under Alembic: where it stands, bringing it to head on start (one process at a
time, under an advisory lock), adopting databases made before migrations, and the ``emag-sync db``
commands' upgrade, downgrade, current and history.

The migrations ship inside the package (``emag_sync/migrations``), so a pip-installed emag-sync migrates
without the source tree; the version table is ``app.alembic_version``, and nothing outside schema ``app``
is ever touched.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from emag_sync.errors import SchemaVersionError
from emag_sync.migrations import VERSION_TABLE
from emag_sync.migrations.legacy import adopt, app_tables
from emag_sync.schema import SCHEMA

log = logging.getLogger(__name__)

SCRIPT_LOCATION = "emag_sync:migrations"
# Serialises upgrades: two first commands, or two workers starting at once, must not both migrate.
MIGRATION_LOCK_KEY = 0x656D6167  # "emag"
# How long a process waits for another one's upgrade before it gives up (a revision that rewrites a
# large table can take minutes).
MIGRATION_LOCK_WAIT_SECONDS = 600
# Extra folders of revisions (tests add a revision that fails halfway); empty in normal use.
EXTRA_VERSION_LOCATIONS: list[str] = []


def alembic_config(url: URL | None = None) -> Config:
    """Alembic's configuration for schema ``app`` (no alembic.ini: everything is decided here)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if EXTRA_VERSION_LOCATIONS:
        locations = [f"{SCRIPT_LOCATION}/versions", *EXTRA_VERSION_LOCATIONS]
        config.set_main_option("version_locations", " ".join(locations))
    if url is not None:  # offline (--sql): the URL names the dialect; % doubled for configparser
        config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=True).replace("%", "%%"))
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "emag_sync/migrations has no revision"
    return head


def describe_revision(revision: Script) -> str:
    """``0002 (accounts as data)``: a revision as messages name it."""
    return f"{revision.revision} ({(revision.doc or '').splitlines()[0].rstrip('.')})"


def _named(revision: str | None) -> str:
    if revision is None:
        return "none (empty)"
    try:
        found = script_directory().get_revision(revision)
    except Exception:  # unknown to this code: a newer emag-sync's revision
        found = None
    return describe_revision(found) if isinstance(found, Script) else revision


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands against this code's migrations."""

    current: str | None  # the version table's revision; None when there is none
    head: str
    versioned: bool  # app.alembic_version exists
    tables: tuple[str, ...]  # the emag-sync tables found in schema app

    @property
    def adoptable(self) -> bool:
        """Tables made before migrations (create_all), no version table: adopted at revision 0001."""
        return not self.versioned and bool(self.tables)

    @property
    def known(self) -> bool:
        """The current revision is one of this code's (False: a newer emag-sync migrated this database)."""
        return self.current is None or self.current in _revision_ids()

    @property
    def pending(self) -> list[str]:
        """The revisions an upgrade to head would apply, oldest first."""
        if not self.known or self.current == self.head:
            return []
        revisions = script_directory().iterate_revisions(self.head, self.current or "base")
        return [r.revision for r in reversed(list(revisions))]

    @property
    def up_to_date(self) -> bool:
        return self.versioned and self.current == self.head


def _revision_ids() -> set[str]:
    return {r.revision for r in script_directory().walk_revisions()}


def read_state(conn: Connection) -> SchemaState:
    """The schema's state, read with two catalogue queries (no lock, nothing written)."""
    versioned = bool(
        conn.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{SCHEMA}.{VERSION_TABLE}"})
    )
    current = None
    if versioned:
        current = conn.scalar(text(f"SELECT version_num FROM {SCHEMA}.{VERSION_TABLE} LIMIT 1"))
    return SchemaState(current, head_revision(), versioned, tuple(app_tables(conn)))


def schema_state(engine: Engine) -> SchemaState:
    with engine.connect() as conn:
        return read_state(conn)


def newer_schema_error(state: SchemaState) -> SchemaVersionError:
    return SchemaVersionError(
        f"the database schema is at revision {state.current}, which this emag-sync does not know (its newest is "
        f"{state.head}): a newer emag-sync migrated it. Nothing was written; use that version (or its "
        f"`emag-sync db downgrade {state.head}` to come back to this one)"
    )


def ensure_current(engine: Engine, *, auto_migrate: bool = True) -> SchemaState:
    """On every start: the schema at head, or one line saying why not. The common case is one query.

    An outdated schema is upgraded (under the migration lock; a database made before migrations is adopted
    first) unless ``auto_migrate`` is off (EMAG_SYNC_AUTO_MIGRATE=false), which stops with the command to
    run. A schema newer than this code is refused and never written to.
    """
    state = schema_state(engine)
    if state.up_to_date:
        return state
    if not state.known:
        raise newer_schema_error(state)
    if not auto_migrate:
        what = (
            "has no emag-sync schema yet"
            if not state.versioned and not state.tables
            else "was made before schema migrations"
            if state.adoptable
            else f"is at revision {_named(state.current)}"
        )
        raise SchemaVersionError(
            f"the database schema {what}; this emag-sync needs revision {_named(state.head)}. "
            "EMAG_SYNC_AUTO_MIGRATE=false: review the change (`emag-sync db upgrade --sql`), then run "
            "`emag-sync db upgrade`"
        )
    return upgrade(engine)


@contextmanager
def migration_lock(conn: Connection, wait_seconds: float = MIGRATION_LOCK_WAIT_SECONDS) -> Iterator[None]:
    """The migration advisory lock on ``conn`` (session-level), waiting at most ``wait_seconds``."""
    started = time.monotonic()
    conn.execute(text(f"SET lock_timeout = '{int(wait_seconds * 1000)}ms'"))
    try:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    except DBAPIError as exc:
        conn.rollback()
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise SchemaVersionError(
                f"another emag-sync has been upgrading the database schema for {wait_seconds:.0f} s and has not "
                "finished; nothing was changed here. Try again once it has (`emag-sync db current` shows the "
                "revision)"
            ) from None
        raise
    finally:
        if conn.in_transaction():
            conn.execute(text("SET lock_timeout = 0"))
    conn.commit()
    waited = time.monotonic() - started
    if waited > 1:
        log.info("database: waited %.1f s for another process's schema upgrade", waited)
    try:
        yield
    finally:
        try:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
        except DBAPIError:
            conn.invalidate()  # the session (and its lock) goes with the connection


def _run(conn: Connection, action: Callable[[Config], None]) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    # Alembic logs each step at INFO on its own loggers; this module says what happened, once.
    action(config)


def upgrade(engine: Engine, target: str = "head") -> SchemaState:
    """Bring the schema to ``target`` (default head) under the migration lock, one transaction per revision.

    Adopts a database made before migrations at 0001 first. A revision that fails leaves the database at
    the one before it; the SchemaVersionError says which revision failed and where the database stands.
    """
    with engine.connect() as conn, migration_lock(conn):
        state = _read_and_end(conn)  # again, under the lock: another process may have migrated meanwhile
        if not state.known:
            raise newer_schema_error(state)
        if state.adoptable:
            with conn.begin():  # checked, completed and stamped at 0001 together, or refused unchanged
                adopt(conn)
                stamp_legacy(conn)
            log.info("database: schema made before migrations adopted at revision %s", _named("0001"))
            state = _read_and_end(conn)
        wanted = state.head if target == "head" else _resolve(target)
        if state.current == wanted:
            return state
        if state.current is not None and _is_ancestor(wanted, state.current):
            raise SchemaVersionError(
                f"the database is at revision {_named(state.current)}, past {_named(wanted)}: use "
                f"`emag-sync db downgrade {wanted}` to go back"
            )
        before = state.current
        try:
            _run(conn, lambda config: command.upgrade(config, wanted))
        except Exception as exc:
            conn.rollback()
            now = read_state(conn).current
            failed = _next_after(now, wanted)
            raise SchemaVersionError(
                f"upgrading the database schema failed at revision {_named(failed)}: {_first_line(exc)}; "
                f"the database stays at revision {_named(now)}"
            ) from exc
        after = read_state(conn)
        if before is None:
            log.info("database: schema created at revision %s", _named(after.current))
        else:
            log.info(
                "database: schema upgraded from revision %s to %s", _named(before), _named(after.current)
            )
        return after


def _read_and_end(conn: Connection) -> SchemaState:
    """The state, with the read's transaction ended: each revision (and an adoption) runs in its own."""
    state = read_state(conn)
    conn.commit()
    return state


def downgrade(engine: Engine, target: str) -> SchemaState:
    """Take the schema back to ``target`` (a revision, or ``base`` for nothing), one transaction per step."""
    with engine.connect() as conn, migration_lock(conn):
        state = _read_and_end(conn)
        if not state.known:
            raise newer_schema_error(state)
        if not state.versioned or state.current is None:
            raise SchemaVersionError("the database schema is not under version control: nothing to downgrade")
        wanted = None if target == "base" else _resolve(target)
        if wanted == state.current or (wanted is not None and not _is_ancestor(wanted, state.current)):
            raise SchemaVersionError(
                f"the database is at revision {_named(state.current)}; {target} is not an earlier revision "
                "(`emag-sync db history` lists them)"
            )
        try:
            _run(conn, lambda config: command.downgrade(config, target if wanted is None else wanted))
        except Exception as exc:
            conn.rollback()
            now = read_state(conn).current
            raise SchemaVersionError(
                f"downgrading the database schema failed: {_first_line(exc)}; the database stays at revision "
                f"{_named(now)}"
            ) from exc
        after = read_state(conn)
        log.info(
            "database: schema downgraded from revision %s to %s", _named(state.current), _named(after.current)
        )
        return after


def upgrade_sql(engine: Engine, target: str = "head") -> str:
    """The SQL an upgrade from the database's revision to ``target`` would run, for review (nothing runs)."""
    state = schema_state(engine)
    if not state.known:
        raise newer_schema_error(state)
    wanted = state.head if target == "head" else _resolve(target)
    notes = []
    start = state.current
    if state.adoptable:
        start = "0001"
        notes.append(
            "-- This database was made before schema migrations: the upgrade first checks its tables and columns "
            "against revision 0001 and records it there (app.alembic_version), then runs:"
        )
    if start == wanted:
        return "\n".join([*notes, f"-- The database is at revision {wanted}: nothing to run."]) + "\n"
    config = alembic_config(engine.url)
    buffer = io.StringIO()
    config.output_buffer = buffer
    with redirect_stdout(io.StringIO()):
        command.upgrade(config, f"{start}:{wanted}" if start else wanted, sql=True)
    return "\n".join([*notes, buffer.getvalue()])


def describe_state(state: SchemaState) -> list[str]:
    """``revision: 0001 (...)``, ``head: ...``, ``pending: ...``: the state as `emag-sync db current` prints it."""
    if not state.versioned:
        current = (
            "none: made before schema migrations (adopted at 0001 by the next upgrade)"
            if state.tables
            else "none: no emag-sync tables yet"
        )
    else:
        current = _named(state.current)
    if not state.known:
        pending = "no: the database is newer than this emag-sync (it refuses to write to it)"
    elif state.up_to_date:
        pending = "no"
    else:
        todo = (
            state.pending
            if state.versioned
            else ([r for r in _all_ids() if r != "0001"] if state.tables else _all_ids())
        )
        pending = "yes: " + ", ".join(_named(r) for r in todo) if todo else "yes: adopt at 0001"
    return [f"revision: {current}", f"head: {_named(state.head)}", f"upgrade pending: {pending}"]


def _all_ids() -> list[str]:
    return [r.revision for r in reversed(list(script_directory().walk_revisions()))]


@dataclass(frozen=True)
class HistoryEntry:
    revision: str
    description: str
    state: str  # applied, current, pending


def history(engine: Engine | None = None) -> list[HistoryEntry]:
    """Every revision, oldest first, with whether the database has it (when an engine is given)."""
    revisions = list(reversed(list(script_directory().walk_revisions())))
    state = schema_state(engine) if engine is not None else None
    applied: set[str] = set()
    if state is not None and state.current is not None and state.known:
        applied = {r.revision for r in script_directory().iterate_revisions(state.current, "base")}
    entries = []
    for revision in revisions:
        status = ""
        if state is not None:
            status = (
                "current"
                if revision.revision == state.current
                else "applied"
                if revision.revision in applied
                else "pending"
            )
        entries.append(
            HistoryEntry(revision.revision, describe_revision(revision).partition(" ")[2][1:-1], status)
        )
    return entries


def _resolve(target: str) -> str:
    try:
        found = script_directory().get_revision(target)
    except Exception:
        found = None
    if not isinstance(found, Script):
        raise SchemaVersionError(f"no revision {target!r} (`emag-sync db history` lists them)")
    return found.revision


def _is_ancestor(older: str, newer: str) -> bool:
    """Whether ``older`` comes before ``newer`` in the revision history."""
    return older != newer and older in {
        r.revision for r in script_directory().iterate_revisions(newer, "base")
    }


def _next_after(current: str | None, target: str) -> str:
    """The revision an upgrade from ``current`` towards ``target`` applies first."""
    path = list(reversed(list(script_directory().iterate_revisions(target, current or "base"))))
    return path[0].revision if path else target


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    message = str(orig if orig is not None else exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__


def stamp_legacy(conn: Connection) -> None:
    """Record revision 0001 in a new version table (inside the caller's transaction)."""
    context = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE, "version_table_schema": SCHEMA}
    )
    context.stamp(script_directory(), "0001")


__all__: Sequence[str] = (
    "SchemaState",
    "downgrade",
    "ensure_current",
    "head_revision",
    "history",
    "schema_state",
    "upgrade",
    "upgrade_sql",
)
