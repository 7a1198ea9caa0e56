"""Listings a script can read: piped tables are complete, and --format tsv|json gives the raw values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

from sqlalchemy import Engine, insert
from sqlalchemy.engine import URL

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.schema import price_updates, sync_runs

LONG_ERROR = "fbe: product_offer/read page 7: " + "eMAG answered something long, " * 12
ERROR = LONG_ERROR + "\ta tab\nsecond line [bold]x[/bold]"
LONG_SKU = "SKU-" + "X" * 120


def emag_sync(*args: str, database: URL, **settings: str) -> subprocess.CompletedProcess[str]:
    """The command with its stdout a pipe, as cron or a script runs it."""
    env = dict(os.environ, EMAG_SYNC_DATABASE_URL=database.render_as_string(hide_password=False), **settings)
    command = [sys.executable, "-c", "from emag_sync.cli import app; app()", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def _seed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(sync_runs).values(
                account_type="fbe", account="fbe", status="failed", items_per_page=100, pages_per_batch=5,
                expected_items=2550, rows_inserted=2550, rows_unchanged=123456789, rows_deactivated=12,
                duration_seconds=Decimal("12.345"), error=ERROR,
            )
        )  # fmt: skip
        conn.execute(
            insert(price_updates).values(
                requested_by="operator-with-a-long-name", source="cli", sku=LONG_SKU, account_type="fbe", account="fbe",
                currency="RON", old_sale_price=Decimal("23.4600"), new_sale_price=Decimal("25.8100"),
                status="refused", emag_answer="refused", emag_messages=["Offer is locked\tfor editing"],
            )
        )  # fmt: skip


def test_piped_tables_cut_nothing(engine: Engine, database_url: URL) -> None:
    """`runs` and `price-history` into a pipe: every header, value and error whole, no `…`."""
    _seed(engine)
    runs = emag_sync("runs", database=database_url)
    assert runs.returncode == 0, runs.stderr
    assert "…" not in runs.stdout
    [header] = [line.split() for line in runs.stdout.splitlines() if "account" in line]
    assert header[:4] == ["run", "account", "status", "started"] and "deactivated" in header
    assert "123456789" in runs.stdout and f"run 1 (fbe): {LONG_ERROR}" in runs.stdout  # on one line
    assert "second line [bold]x[/bold]" in runs.stdout  # markup from the database shown as written

    history = emag_sync("price-history", database=database_url)
    assert history.returncode == 0, history.stderr
    assert (
        "…" not in history.stdout
        and LONG_SKU in history.stdout
        and "operator-with-a-long-name" in history.stdout
    )


def test_json_is_a_list_of_objects_with_raw_values(engine: Engine, database_url: URL) -> None:
    _seed(engine)
    runs = emag_sync("runs", "--format", "json", database=database_url)
    assert runs.returncode == 0, runs.stderr
    [run] = json.loads(runs.stdout)
    assert run["account_type"] == "fbe" and run["status"] == "failed" and run["rows_unchanged"] == 123456789
    assert run["duration_seconds"] == "12.345"  # Decimal as its exact text
    assert run["started_at"].endswith("+00:00") and run["finished_at"] is None  # ISO 8601, UTC
    assert run["error"] == ERROR

    history = emag_sync("price-history", "--format", "JSON", database=database_url)
    [update] = json.loads(history.stdout)
    assert update["sku"] == LONG_SKU and update["account"] == "fbe" and update["status"] == "refused"
    assert update["old"]["sale_price"] == "23.4600" and update["new"]["sale_price"] == "25.8100"
    assert update["emag_messages"] == ["Offer is locked\tfor editing"]


def test_tsv_escapes_tabs_and_newlines_inside_values(engine: Engine, database_url: URL) -> None:
    _seed(engine)
    runs = emag_sync("runs", "--format", "tsv", database=database_url)
    assert runs.returncode == 0, runs.stderr
    header, row = runs.stdout.splitlines()  # the error's newline did not split the row
    columns = header.split("\t")
    values = dict(zip(columns, row.split("\t"), strict=True))  # nor did its tabs
    assert columns[:4] == ["id", "account", "account_type", "status"]
    assert values["error"] == ERROR.replace("\t", "\\t").replace("\n", "\\n")
    assert values["duration_seconds"] == "12.345" and values["finished_at"] == ""


def test_notes_go_to_stderr_beside_data(engine: Engine, database_url: URL) -> None:
    """An interrupted price update's explanation is the table's caption, and a note on stderr beside JSON."""
    with engine.begin() as conn:
        conn.execute(
            insert(price_updates).values(
                requested_by="op",
                source="cli",
                sku="EMG1",
                account_type="main",
                account="main",
                status="sending",
            )
        )
    listed = emag_sync("price-history", "--format", "json", database=database_url)
    assert [u["status"] for u in json.loads(listed.stdout)] == ["interrupted"]
    assert listed.stderr.startswith("interrupted: the run sending it stopped")
    refused = emag_sync("runs", "--format", "xml", database=database_url)
    assert refused.returncode == 2 and "xml" in refused.stderr


def test_check_as_json_keeps_its_notes_on_stderr(engine: Engine, database_url: URL, tmp_path) -> None:
    from tests.test_expectations import seed_catalogue

    seed_catalogue(engine, legacy_account(AccountType.FBE))
    checked = emag_sync("check", "--account", "fbe", "--format", "json", database=database_url,
                        EMAG_SYNC_HOME=str(tmp_path))  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    rows = json.loads(checked.stdout)
    assert (
        rows and {row["account"] for row in rows} == {"fbe"} and {"pass"} <= {row["result"] for row in rows}
    )
    assert "data-quality report fbe: http" in checked.stderr


def test_bulk_price_results_as_json(engine: Engine, database_url: URL, sandbox_env, tmp_path) -> None:
    """`update-price --file ... --format json`: the per-line verdicts on stdout, the summary on stderr."""
    from tests.price_helpers import seed_offers

    seed_offers(engine, sandbox_env.state, legacy_account(AccountType.FBE))
    prices = tmp_path / "prices.csv"
    prices.write_text("sku,account,price\nEMG7,fbe,3_2.99\nEMG8,fbe,\t\n", encoding="utf-8")
    done = emag_sync("update-price", "--file", str(prices), "--dry-run", "--format", "json",
                     database=database_url, **sandbox_env.env)  # fmt: skip
    assert done.returncode == 1, done.stderr
    verdicts = json.loads(done.stdout)
    assert [(v["line"], v["sku"], v["status"]) for v in verdicts] == [
        ("2", "EMG7", "invalid"),
        ("3", "EMG8", "invalid"),
    ]
    assert verdicts[0]["message"] == "price '3_2.99' is not a number"
    assert "price updates: 2 invalid" in done.stderr
    single = emag_sync("update-price", "--sku", "EMG7", "--account", "fbe", "--price", "1", "--format", "tsv",
                       database=database_url, **sandbox_env.env)  # fmt: skip
    assert (
        single.returncode == 1
        and single.stderr == "emag-sync: --format tsv is for --file (its per-line results)\n"
    )
