"""Session-wide real parts: one embedded PostgreSQL (a fresh database per test) and one Prefect harness."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports Prefect: an isolated, offline, quiet Prefect home for the whole session.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="emag-sync-tests-"))
os.environ.update(
    {
        "PREFECT_HOME": str(_SESSION_DIR / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "EMAG_SYNC_HOME": str(_SESSION_DIR / "home"),
    }
)
for _name in [n for n in os.environ if n.startswith("EMAG_") and n != "EMAG_SYNC_HOME"]:
    del os.environ[_name]  # a developer's real credentials or database must never leak into tests

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from emag_sync.accounts import AccountType
from emag_sync.db import embedded_server_url, make_engine
from emag_sync.registry import register_legacy
from emag_sync.schema_version import upgrade
from tests.helpers import SCHEMA_TEMPLATE, scratch_database

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[URL]:
    """One embedded PostgreSQL for the session, with a template database that has the schema."""
    template_url = embedded_server_url(_SESSION_DIR / "pg", database=SCHEMA_TEMPLATE)
    engine = make_engine(template_url)
    upgrade(engine)
    register_legacy(engine, AccountType, "http://sandbox")  # an install whose main and fbe have synced before
    engine.dispose()
    yield template_url.set(database="postgres")


@pytest.fixture
def database_url(pg_admin_url: URL) -> Iterator[URL]:
    """A fresh database with the schema in place, dropped after the test."""
    with scratch_database(pg_admin_url, f"t_{os.getpid()}_{next(_counter)}") as url:
        yield url


@pytest.fixture
def engine(database_url: URL) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_env(database_url: URL, monkeypatch: pytest.MonkeyPatch) -> URL:
    """Points the settings (EMAG_SYNC_DATABASE_URL) at this test's database."""
    monkeypatch.setenv("EMAG_SYNC_DATABASE_URL", database_url.render_as_string(hide_password=False))
    return database_url


@pytest.fixture(scope="session")
def prefect_harness(pg_admin_url: URL) -> Iterator[None]:
    """The one Prefect server of the session, on the session's PostgreSQL (Prefect's own test harness runs
    SQLite, which answers 503 while one writer holds it: workers and concurrent flow runs made tests fail);
    only flow tests ask for it. Its log: prefect-server.log in the session directory."""
    from prefect.settings import temporary_settings

    from benchmarks.pool import prefect_server

    database = pg_admin_url.set(database="prefect_server")
    with prefect_server(database, os.environ, _SESSION_DIR / "prefect-server.log") as api_url:
        # Heartbeats cost about a second per flow run and detect nothing a test needs.
        updates = {
            "api.url": api_url,
            "server.database.connection_url": database.set(drivername="postgresql+asyncpg").render_as_string(
                hide_password=False
            ),
            "flows.heartbeat_frequency": None,
        }
        with temporary_settings(updates=updates):
            yield


# --- the eMAG sandbox -------------------------------------------------------------------------------
from emag_sandbox.server import RunningSandbox, serve
from emag_sandbox.state import SandboxState


@pytest.fixture
def sandbox_state() -> SandboxState:
    """A fresh sandbox world: FBE 250 / MAIN 200 records, rate limit OFF (turn on with .rate_limit = True)."""
    return SandboxState(products=250, main_products=200, rate_limit=False)


@pytest.fixture
def sandbox_server(sandbox_state: SandboxState) -> Iterator[RunningSandbox]:
    """``sandbox_state`` served on a free loopback port; ``.url`` is the /api-3 base, ``.env`` the settings."""
    with serve(sandbox_state) as running:
        yield running


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSandbox]:
    """The price tests' sandbox: PRODUCTS records on a loopback port (rate limit off), the environment
    pointing at it."""
    from tests.price_helpers import PRODUCTS

    state = SandboxState(products=PRODUCTS, rate_limit=False)
    with serve(state) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture
def serve_sandbox():
    """``serve(state)``: for a test that serves a sandbox world of its own on a loopback port."""
    return serve


@pytest.fixture
def sandbox_env(monkeypatch: pytest.MonkeyPatch, sandbox_server: RunningSandbox) -> RunningSandbox:
    """Points the settings at ``sandbox_server`` (EMAG_API_URL and both accounts' credentials)."""
    for name, value in sandbox_server.env.items():
        monkeypatch.setenv(name, value)
    return sandbox_server


# --- the fast lane ----------------------------------------------------------------------------------
# Fixtures that bring up a real part (PostgreSQL, the sandbox on a port, a Prefect server). A test that
# uses none of them is a unit test: `make test-fast` runs only those (pytest -m unit).
REAL_PARTS = frozenset(
    {
        "pg_admin_url",
        "database_url",
        "engine",
        "db_env",
        "prefect_harness",
        "sandbox_server",
        "sandbox_env",
        "serve_sandbox",
        "sandbox",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not REAL_PARTS.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker(
            "flow"
        ):
            item.add_marker(pytest.mark.unit)
