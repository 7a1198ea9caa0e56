"""`emag-sync db`: a person or an ERP reaches the embedded PostgreSQL, kept running between commands."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg


def emag_sync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from emag_sync.cli import app; app()", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_embedded_database_kept_running_for_other_programs(tmp_path) -> None:
    """`db start` keeps the server up after the commands using it have exited; `db url` and `db psql` reach
    it as another program would; `db stop` stops it; `db status` says which (exit 1 when down)."""
    env = {k: v for k, v in os.environ.items() if k != "EMAG_SYNC_DATABASE_URL"}
    env["EMAG_SYNC_HOME"] = str(tmp_path / "home")
    down = emag_sync("db", "status", env=env)
    assert down.returncode == 1 and "not running" in down.stdout

    started = emag_sync("db", "start", env=env)
    assert started.returncode == 0, started.stderr
    assert emag_sync("runs", env=env).returncode == 0  # another command, which exits...
    up = emag_sync("db", "status", env=env)  # ...and the server is still up
    assert up.returncode == 0 and "running (kept running by `emag-sync db start`)" in up.stdout

    url = emag_sync("db", "url", env=env).stdout.strip()
    assert url.startswith("postgresql://postgres@/emag_sync?host=")
    with psycopg.connect(url) as conn:  # an ERP's connection
        assert conn.execute("SELECT count(*) FROM app.emag_sync_runs").fetchone() == (0,)
    command = emag_sync("db", "psql", env=env).stdout.strip()  # not a terminal: the command is printed
    psql = subprocess.run(
        f"{command} -tAc 'SELECT 41 + 1'", shell=True, capture_output=True, text=True, check=False
    )
    assert psql.stdout.strip() == "42", psql.stderr

    stopped = emag_sync("db", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert emag_sync("db", "status", env=env).returncode == 1


def test_db_commands_never_print_a_password(db_env, monkeypatch) -> None:
    """With EMAG_SYNC_DATABASE_URL (a server of yours) `db url` and `db status` show it without its password,
    and `db start` says it does not manage that server."""
    secret = "Zq-db-password"
    env = dict(os.environ)
    env["EMAG_SYNC_DATABASE_URL"] = db_env.render_as_string(hide_password=False) + f"&password={secret}"
    for args in (("db", "url"), ("db", "status"), ("db", "psql")):
        result = emag_sync(*args, env=env)
        assert secret not in result.stdout + result.stderr, args
    assert "password=***" in emag_sync("db", "url", env=env).stdout
    refused = emag_sync("db", "start", env=env)
    assert refused.returncode == 1 and "does not start or stop it" in refused.stderr


def test_db_psql_passes_its_arguments_to_psql(db_env) -> None:
    """Everything after `db psql` goes to psql as given (-c, -A, -t, ...), and psql's exit status is kept."""
    env = dict(os.environ)
    env["EMAG_SYNC_DATABASE_URL"] = db_env.render_as_string(hide_password=False)
    answered = emag_sync("db", "psql", "-tA", "-c", "select 40 + 2", env=env)
    assert answered.returncode == 0 and answered.stdout.strip() == "42", answered.stderr
    refused = emag_sync("db", "psql", "-v", "ON_ERROR_STOP=1", "-c", "select nope", env=env)
    assert refused.returncode != 0 and "nope" in refused.stderr
