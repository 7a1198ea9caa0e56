"""Smoke test of the load benchmark at a tiny size: it runs and produces positive figures (no targets)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from benchmarks.bench import bench_load


@pytest.fixture
def fresh_database(pg_admin_url) -> Iterator[Callable[[str], Any]]:
    """What the benchmarks' workspace gives them: ``name`` -> the URL of a new database with the schema (each
    call a database of its own, all dropped after the test)."""
    created: list[str] = []
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")

    def fresh(name: str) -> Any:
        unique = f"{name}_{os.getpid()}_{len(created)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{unique}" TEMPLATE "emag_sync_template"'))
        created.append(unique)
        return pg_admin_url.set(database=unique)

    try:
        yield fresh
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_load_benchmark_produces_figures(fresh_database):
    result = bench_load(fresh_database, records=300, old_way_records=20, floor_repeats=1)

    assert result["first_load"]["inserted"] == 300
    assert result["changed_reload"]["updated"] == 30
    assert result["unchanged_reload"]["unchanged"] == 300
    for part in ("floor", "first_load", "changed_reload", "unchanged_reload", "old_way", "transform"):
        assert result[part]["rows_per_s"] > 0, part
    for part in ("first_load", "changed_reload", "unchanged_reload", "old_way"):
        assert result[part]["ratio_to_floor"] > 0, part


def test_accounts_benchmark_measures_every_phase(fresh_database, pg_admin_url, prefect_harness, tmp_path):
    """`--only accounts` at a tiny size: two accounts of 150 offers, the sandbox's limit on, both phases
    in every mode (in-process, and sync-all on a process pool of two workers), every account verified and every figure measured;
    a later run of one mode keeps the other's rows."""
    from prefect.settings import get_current_settings

    from benchmarks import accounts

    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAG_", "PREFECT_API_"))}
    context = accounts.Context(
        fresh_database, pg_admin_url, str(get_current_settings().api.url), tmp_path, env
    )
    result = accounts.run_accounts(context, sizes=(2,), records=150, status=lambda _: None)

    rows = result["rows"]
    assert [(r["mode"], r["accounts"], r["phase"]) for r in rows] == [
        (mode, 2, phase) for mode in accounts.MODES for phase in ("first load", "reload")
    ]
    for row in rows:
        assert row["failed"] is None, row
        assert (row["records"], row["verified"]) == (300, 2), row
        assert row["requests_one_account"] >= 2  # two pages of 100 (and the count)
        assert row["floor_seconds"] == round(row["requests_one_account"] / 3, 3)
        assert row["wall_seconds"] > 0 and row["cpu_seconds"] > 0 and row["peak_rss_mb"] > 0
        assert row["peak_db_connections"] >= 1
    assert result["largest_accounts_holding_target"] == {
        row["mode"]: 2 if accounts.holds(row) else None for row in rows if row["phase"] == "reload"
    }
    again = {**result, "rows": [{**row, "wall_seconds": 0.5} for row in rows if row["mode"] == "in-process"]}
    merged = accounts.merge(result, again)
    assert sorted((r["mode"], r["phase"], r["wall_seconds"] == 0.5) for r in merged["rows"]) == sorted(
        (r["mode"], r["phase"], r["mode"] == "in-process") for r in rows
    )
