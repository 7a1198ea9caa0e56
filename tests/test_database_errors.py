"""What the database refuses is one line saying what really happened: a read-only role, a statement
timeout. Real PostgreSQL (embedded), the sandbox over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import URL

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.errors import DatabasePermissionError, StatementTimeoutError
from emag_sync.options import SyncOptions
from emag_sync.schema import sync_runs
from tasks.sync_account import sync_account_with_settings

FBE = legacy_account(AccountType.FBE)


def emag_sync(*args: str, database: URL, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, EMAG_SYNC_DATABASE_URL=database.render_as_string(hide_password=False), **env)
    command = [sys.executable, "-c", "from emag_sync.cli import app; app()", *args]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def reader_url(database_url: URL) -> Iterator[URL]:
    """A role that may log in and read schema app, nothing more (roles belong to the whole server)."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA app TO {role}"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA app TO {role}"))
    try:
        yield database_url.set(username=role)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


def _stale_running_run(database_url: URL) -> int:
    """A run left 'running' by a process that died (nobody holds its account's lock)."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        run_id: int = conn.execute(
            insert(sync_runs)
            .values(
                account_type="fbe", account="fbe", status="running", items_per_page=100, pages_per_batch=5
            )
            .returning(sync_runs.c.id)
        ).scalar_one()
    engine.dispose()
    return run_id


def test_viewing_commands_work_for_a_read_only_role(database_url: URL, reader_url: URL) -> None:
    """`runs` cannot mark the dead run crashed (a write): it says so on stderr and shows the history."""
    run_id = _stale_running_run(database_url)
    runs = emag_sync("runs", database=reader_url)
    assert runs.returncode == 0, runs.stderr
    assert "Traceback" not in runs.stderr and runs.stderr.count("\n") == 1
    assert f"role {reader_url.username} may only read app.emag_sync_runs" in runs.stderr
    assert f"{run_id}     fbe       running" in runs.stdout
    history = emag_sync("price-history", "--format", "json", database=reader_url)
    assert history.returncode == 0 and history.stdout.strip() == "[]", history.stderr


def test_a_write_refused_by_permissions_names_the_role_and_the_table(
    reader_url: URL, sandbox_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync as a read-only role: one line naming role and table, no SQL (it printed the INSERT)."""
    monkeypatch.setenv("EMAG_SYNC_DATABASE_URL", reader_url.render_as_string(hide_password=False))
    with pytest.raises(DatabasePermissionError) as refused:
        sync_account_with_settings(FBE, SyncOptions(), flow_run_id=None, count=None)
    message = str(refused.value)
    assert message.startswith(f"fbe: role {reader_url.username} may not write app.emag_sync_runs at ")
    assert "SQLSTATE 42501" in message and "INSERT INTO" not in message and "\n" not in message
    assert (refused.value.role, refused.value.relation) == (reader_url.username, "app.emag_sync_runs")


def test_a_statement_timeout_is_named_as_such(
    database_url: URL, sandbox_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement cancelled by statement_timeout (SQLSTATE 57014) is neither a lost nor a refused
    connection: the sync and `runs` say which setting stopped it."""
    blocker = create_engine(database_url)
    monkeypatch.setenv("EMAG_SYNC_DATABASE_URL", database_url.render_as_string(hide_password=False))
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=300")
    with blocker.connect() as conn:
        conn.execute(text("LOCK TABLE app.emag_sync_runs IN ACCESS EXCLUSIVE MODE"))  # until rollback
        with pytest.raises(StatementTimeoutError) as cancelled:
            sync_account_with_settings(FBE, SyncOptions(), flow_run_id=None, count=None)
        runs = emag_sync("runs", database=database_url, PGOPTIONS="-c statement_timeout=300")
        conn.rollback()
    blocker.dispose()
    message = str(cancelled.value)
    assert message.startswith("fbe: PostgreSQL at ") and "statement_timeout" in message
    assert "cannot connect" not in message and "went away" not in message and "\n" not in message
    assert runs.returncode == 1 and runs.stderr.count("\n") == 1, runs.stderr
    assert "ran longer than its statement_timeout" in runs.stderr and "Traceback" not in runs.stderr


def test_the_stale_run_is_still_marked_crashed_by_a_role_that_may_write(database_url: URL) -> None:
    run_id = _stale_running_run(database_url)
    assert emag_sync("runs", database=database_url).returncode == 0
    engine = create_engine(database_url)
    with engine.connect() as conn:
        status = conn.scalar(select(sync_runs.c.status).where(sync_runs.c.id == run_id))
    engine.dispose()
    assert status == "crashed"


@pytest.mark.flow
def test_sync_as_a_read_only_role_fails_in_one_line_without_sql(
    prefect_harness: None, reader_url: URL, sandbox_env, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from emag_sync.cli import app

    monkeypatch.setenv("EMAG_SYNC_DATABASE_URL", reader_url.render_as_string(hide_password=False))
    monkeypatch.setenv("EMAG_SYNC_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")  # what the command sets itself
    synced = CliRunner().invoke(app, ["sync", "--account", "fbe"])
    assert synced.exit_code == 1 and isinstance(synced.exception, SystemExit), synced.output
    [failed] = [line for line in synced.stderr.splitlines() if line.startswith("sync failed:")]
    assert f"fbe: role {reader_url.username} may not write app.emag_sync_runs" in failed
    assert (
        "INSERT INTO" not in synced.output
        and "[SQL" not in synced.output
        and "Traceback" not in synced.output
    )
