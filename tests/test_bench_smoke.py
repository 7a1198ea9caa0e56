"""Smoke test of the load benchmark at a tiny size: it runs and produces positive figures (no targets)."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text

from benchmarks.bench import bench_load


def test_load_benchmark_produces_figures(pg_admin_url):
    created: list[str] = []
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")

    def fresh_database(name: str):
        unique = f"{name}_{os.getpid()}_{len(created)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{unique}" TEMPLATE "emag_sync_template"'))
        created.append(unique)
        return pg_admin_url.set(database=unique)

    try:
        result = bench_load(fresh_database, records=300, old_way_records=20, floor_repeats=1)
    finally:
        with admin.connect() as conn:
            for name in created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    assert result["first_load"]["inserted"] == 300
    assert result["changed_reload"]["updated"] == 30
    assert result["unchanged_reload"]["unchanged"] == 300
    for part in ("floor", "first_load", "changed_reload", "unchanged_reload", "old_way", "transform"):
        assert result[part]["rows_per_s"] > 0, part
    for part in ("first_load", "changed_reload", "unchanged_reload", "old_way"):
        assert result[part]["ratio_to_floor"] > 0, part
