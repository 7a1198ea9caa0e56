"""The data-quality checkpoint against the embedded PostgreSQL: clean data, the incident, warnings, CLI."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from sqlalchemy import Engine, delete, insert, select, text, update
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from emag_sync.accounts import Account, AccountType, legacy_account
from emag_sync.cli import app
from emag_sync.cli.docs import serving
from emag_sync.db import make_engine
from emag_sync.registry import add_account
from emag_sync.schema import offers, products, sync_runs
from expectations import checkpoint
from expectations.checkpoint import data_docs_site, run_checkpoint
from expectations.report import artifact_key, dq_markdown
from expectations.results import DQResult
from expectations.suites import asset_query
from tasks.data_quality import publish_dq_artifacts
from tests.helpers import rendered_markdown

N = 40
MAIN, FBE = legacy_account(AccountType.MAIN), legacy_account(AccountType.FBE)


def seed_catalogue(engine: Engine, account: AccountType, n: int = N, *, with_run: bool = True) -> int | None:
    """``n`` consistent product + offer rows for ``account`` (SKUs EMG1..EMGn) and a succeeded run row."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        ids = conn.execute(
            insert(products).returning(products.c.id, products.c.sku),
            [
                {
                    "sku": f"EMG{i}",
                    "account_type": account.kind.value,
                    "account": account.name,
                    "emag_id": 1000 + i,
                    "name": f"Product {i}",
                    "raw_emag_data": {"id": 1000 + i, "part_number": f"EMG{i}"},
                    "content_hash": "h",
                    "last_synced_at": now,
                }
                for i in range(1, n + 1)
            ],
        ).all()
        conn.execute(
            insert(offers),
            [
                {
                    "product_id": product_id,
                    "sku": sku,
                    "account_type": account.kind.value,
                    "account": account.name,
                    "emag_offer_id": 1000 + int(sku[3:]),
                    "price": Decimal("121.8400"),
                    "sale_price": Decimal("121.8400"),
                    "min_sale_price": Decimal("100.0000"),
                    "max_sale_price": Decimal("150.0000"),
                    "currency": "RON",
                    "stock": 10,
                    "available_stock": 8,
                    "reserved_stock": 2,
                    "content_hash": "h",
                    "last_synced_at": now,
                }
                for product_id, sku in ids
            ],
        )
        if not with_run:
            return None
        return conn.scalar(
            insert(sync_runs)
            .values(
                account_type=account.kind.value,
                account=account.name,
                status="succeeded",
                items_per_page=100,
                pages_per_batch=5,
                expected_items=n,
                records_read=n,
                records_loaded=n,
                rows_rejected=0,
            )
            .returning(sync_runs.c.id)
        )


def drop_offers(engine: Engine, account: AccountType, skus: list[str] | None = None) -> None:
    """The incident: offers never committed (all of the account's, or the given SKUs')."""
    query = delete(offers).where(offers.c.account == account.name)
    with engine.begin() as conn:
        conn.execute(query if skus is None else query.where(offers.c.sku.in_(skus)))


def files_under(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.is_file()]


@pytest.fixture
def reader_url(engine: Engine, database_url: URL) -> URL:
    """A role with a password, so the test can prove the password never lands in GX's output."""
    with engine.begin() as conn:
        conn.execute(text("CREATE ROLE dq_reader LOGIN PASSWORD 'Pw-n0t-in-files-7431'"))
        conn.execute(text("GRANT USAGE ON SCHEMA app TO dq_reader"))
        conn.execute(text("GRANT SELECT ON ALL TABLES IN SCHEMA app TO dq_reader"))
        conn.execute(text("GRANT UPDATE (dq_status, dq_results) ON app.emag_sync_runs TO dq_reader"))
    return database_url.set(username="dq_reader", password="Pw-n0t-in-files-7431")


def test_clean_database_passes_every_expectation_and_writes_docs_without_password(
    engine: Engine, reader_url: URL, tmp_path: Path
) -> None:
    runs = {account: seed_catalogue(engine, account) for account in (MAIN, FBE)}
    make_engine(reader_url).dispose()  # the role really connects with its password

    results = [
        run_checkpoint(reader_url, account, run_id=runs[account], home=tmp_path) for account in (MAIN, FBE)
    ]

    for result in results:
        assert result.status == "passed", result.message
        assert all(row.passed is True for row in result.rows), [r for r in result.rows if not r.passed]
        assert {"critical", "warning"} == {row.severity for row in result.rows}
        assert result.message == f"{result.account.title}: all {len(result.rows)} expectations passed"
        assert result.data_docs_index.is_file()
        assert result.data_docs_index.is_relative_to(tmp_path / "gx")
    count_row = next(r for r in results[1].rows if r.name == "active_offer_count_equals_active_product_count")
    assert count_row.observed == f"{N} active offers, {N} active products"
    with engine.connect() as conn:
        stored = dict(conn.execute(select(sync_runs.c.account_type, sync_runs.c.dq_status)).all())
        stored_json = conn.scalar(select(sync_runs.c.dq_results).where(sync_runs.c.id == runs[FBE]))
    assert stored == {"main": "passed", "fbe": "passed"}
    assert stored_json["status"] == "passed" and len(stored_json["rows"]) == len(results[1].rows)
    assert stored_json["rows"][0]["passed"] is True

    docs = files_under(tmp_path)
    assert any(p.suffix == ".html" and "validations" in p.parts for p in docs)
    assert any(p.suffix == ".json" and "validations" in p.parts for p in docs)
    leaks = [p for p in docs if b"Pw-n0t-in-files-7431" in p.read_bytes()]
    assert leaks == []
    assert "Pw-n0t-in-files-7431" not in repr(results) + dq_markdown(results[1])
    publish_dq_artifacts(results[0])  # outside a Prefect run: a no-op, no error


def test_incident_fails_critical_expectations_with_counts_and_skus(
    engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    runs = {account: seed_catalogue(engine, account) for account in (MAIN, FBE)}
    drop_offers(engine, FBE)  # 40 FBE products, 0 offers: the incident
    drop_offers(engine, MAIN, ["EMG5", "EMG17", "EMG33"])
    with engine.begin() as conn:  # FBE's run also loaded fewer records than eMAG counted
        conn.execute(update(sync_runs).where(sync_runs.c.id == runs[FBE]).values(records_loaded=N - 4))

    fbe = run_checkpoint(database_url, FBE, run_id=runs[FBE], home=tmp_path)
    main = run_checkpoint(database_url, MAIN, run_id=None, home=tmp_path)  # standalone: latest succeeded run

    assert fbe.status == "failed" and main.status == "failed"
    assert fbe.message.startswith(f"fbe: active offers 0 != active products {N}; ")
    assert f"fbe: {N} active products without exactly one active offer: " in fbe.message
    assert "(+20 more)" in fbe.message  # the SKU list is bounded
    assert (
        f"fbe: records loaded {N - 4} + rejected 0 + confirmed gone 0 < eMAG count {N} (run {runs[FBE]})"
        in fbe.message
    )
    assert {r.name for r in fbe.critical_failures} == {
        "active_offer_count_equals_active_product_count",
        "active_product_has_one_active_offer",
        "run_complete_against_emag_count",
    }
    assert main.message == (
        f"main: active offers {N - 3} != active products {N}; "
        "main: 3 active products without exactly one active offer: EMG17, EMG33, EMG5"
    )
    assert main.run_id == runs[MAIN]
    markdown = rendered_markdown(dq_markdown(fbe))
    assert (
        "<td>active_offer_count_equals_active_product_count</td>\n<td>critical</td>\n<td>FAIL</td>\n"
        f"<td>0 active offers, {N} active products</td>"
    ) in markdown
    with engine.connect() as conn:
        stored = dict(conn.execute(select(sync_runs.c.account_type, sync_runs.c.dq_status)).all())
    assert stored == {"fbe": "failed", "main": None}  # a standalone check does not rewrite run history


def test_an_emag_id_on_two_active_rows_fails_critically_naming_both_skus(
    engine: Engine, tmp_path: Path
) -> None:
    """A SKU renamed on eMAG (same id, new part_number) whose old row stayed active: two active products and
    two active offers carry one eMAG id. Each has its one offer, so only the id rule can see it."""
    run_id = seed_catalogue(engine, FBE)
    with engine.begin() as conn:
        product_id = conn.scalar(
            insert(products)
            .values(sku="EMG1-R", account_type=FBE.kind.value, account=FBE.name, emag_id=1001, name="Product 1", content_hash="h",
                    raw_emag_data={"id": 1001, "part_number": "EMG1-R"}, last_synced_at=datetime.now(UTC))
            .returning(products.c.id)
        )  # fmt: skip
        conn.execute(
            insert(offers).values(product_id=product_id, sku="EMG1-R", account_type=FBE.kind.value, account=FBE.name, emag_offer_id=1001,
                                  price=Decimal("121.8400"), sale_price=Decimal("121.8400"), currency="RON",
                                  stock=1, available_stock=1, reserved_stock=0, content_hash="h",
                                  last_synced_at=datetime.now(UTC))
        )  # fmt: skip

    result = run_checkpoint(engine.url, FBE, run_id=run_id, home=tmp_path)

    assert result.status == "failed"
    assert {row.name for row in result.critical_failures} == {
        "active_products_emag_id_unique",
        "active_offers_emag_offer_id_unique",
    }
    assert (
        "fbe: 2 active products share their eMAG id (emag_id) with another active row: EMG1" in result.message
    )
    assert "EMG1-R" in result.message and "emag_offer_id" in result.message


def test_warning_only_problem_reports_but_does_not_fail(
    engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    seed_catalogue(engine, FBE, with_run=False)  # no sync run yet: completeness is not applicable
    with engine.begin() as conn:
        conn.execute(update(offers).where(offers.c.sku == "EMG7").values(sale_price=Decimal("151.0000")))

    result = run_checkpoint(database_url, FBE, run_id=None, home=tmp_path)

    assert result.status == "warning"
    assert result.critical_failures == []
    assert result.message == "fbe: 1 active offers with sale_price > max_sale_price: EMG7"
    not_applicable = {r.name for r in result.rows if r.passed is None}
    assert not_applicable == {
        "run_complete_against_emag_count",
        "run_loaded_most_of_emag_count",
        "rejected_share_under_threshold",
    }

    unknown_run = run_checkpoint(database_url, FBE, run_id=424242, home=tmp_path)
    assert unknown_run.status == "failed"
    assert unknown_run.message == "fbe: run 424242 is not in the run history"


def test_cli_check_exit_codes(
    engine: Engine, db_env: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAG_SYNC_HOME", str(tmp_path))
    seed_catalogue(engine, FBE)
    runner = CliRunner()

    ok = runner.invoke(app, ["check", "--account", "fbe"])
    assert ok.exit_code == 0, ok.output
    assert "Data quality fbe: passed" in ok.stdout
    assert str(tmp_path / "gx") in ok.stdout.replace("\n", "")

    drop_offers(engine, FBE)
    failed = runner.invoke(app, ["check", "--account", "fbe"])
    assert failed.exit_code == 1
    assert f"fbe: active offers 0 != active products {N}" in failed.stderr

    bad = runner.invoke(app, ["check", "--account", "shop"])
    assert bad.exit_code == 1 and "no account 'shop'; registered: fbe, main" in bad.stderr


def test_great_expectations_is_imported_only_when_a_checkpoint_runs() -> None:
    code = (
        "import sys, emag_sync.cli, emag_sync.cli.docs, flows.dq_check, expectations.checkpoint,"
        " expectations.report, expectations.run_page;"
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _validation_pages(result: DQResult) -> list[Path]:
    """The GX validation pages the run's own page links to, as files."""
    assert result.report_page is not None
    links = re.findall(r'href="([^"]+)"', result.report_page.read_text(encoding="utf-8"))
    return [(result.report_page.parent / link).resolve() for link in links]


def test_site_keeps_both_accounts_and_each_run_has_its_own_page(
    engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    runs = {account: seed_catalogue(engine, account) for account in (MAIN, FBE)}

    main = run_checkpoint(database_url, MAIN, run_id=runs[MAIN], home=tmp_path)
    fbe = run_checkpoint(database_url, FBE, run_id=runs[FBE], home=tmp_path)  # after MAIN: MAIN must stay

    site = data_docs_site(tmp_path)
    index = (site / "index.html").read_text(encoding="utf-8")
    for account in ("main", "fbe"):
        suites = sorted(p.stem for p in (site / "expectations").glob(f"emag_{account}_*.html"))
        assert suites == [
            f"emag_{account}_{a}"
            for a in sorted(("active_offers", "active_products", "offers", "products", "run"))
        ]
        assert (
            f"validations/emag_{account}_active_offers/{account}-run-{runs[MAIN if account == 'main' else FBE]}/"
            in index
        )
    for result in (main, fbe):
        assert result.report_page is not None and result.report_page.is_file()
        assert result.report_page.is_relative_to(site / "runs" / f"emag_{result.account.name}")
        assert result.report_url == "http://127.0.0.1:8766/" + result.report_page.relative_to(site).as_posix()
        page = result.report_page.read_text(encoding="utf-8")
        assert all(f"<td>{row.name}</td>" in page for row in result.rows)
        linked = _validation_pages(result)
        assert (site / "index.html").resolve() in linked
        assert len(linked) == 6 and all(p.is_file() for p in linked)  # 5 assets + the index
    assert fbe.as_json()["report_url"] == fbe.report_url


def test_history_keeps_the_newest_runs_pages_and_their_validation_pages(
    engine: Engine, database_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "KEEP_VALIDATION_RUNS", 2)
    seed_catalogue(engine, FBE, with_run=False)

    results = [run_checkpoint(database_url, FBE, run_id=None, home=tmp_path) for _ in range(3)]

    site = data_docs_site(tmp_path)
    kept = sorted(p.relative_to(site) for p in (site / "runs").rglob("index.html"))
    assert kept == sorted(r.report_page.relative_to(site) for r in results[1:] if r.report_page)
    assert all(p.is_file() for r in results[1:] for p in _validation_pages(r))
    assert len(list((site / "validations" / "emag_fbe_active_offers").glob("*/*"))) == 2


def test_failed_expectation_lists_the_offending_skus_in_data_docs(
    engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    run_id = seed_catalogue(engine, FBE)
    drop_offers(engine, FBE, ["EMG5", "EMG17"])

    result = run_checkpoint(database_url, FBE, run_id=run_id, home=tmp_path)

    [page] = [p for p in _validation_pages(result) if "emag_fbe_active_products" in p.parts]
    html = page.read_text(encoding="utf-8")
    assert "sku: EMG17 · active_offers: 0" in html and "sku: EMG5 · active_offers: 0" in html


def test_estimated_stock_above_general_stock_is_no_warning(
    engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    """eMAG's quirk, which the transform already handles (reserved stock clipped at 0): nothing to act on."""
    run_id = seed_catalogue(engine, FBE)
    with engine.begin() as conn:
        conn.execute(
            update(offers)
            .where(offers.c.sku.in_(["EMG3", "EMG9"]))
            .values(available_stock=12, reserved_stock=0)
        )

    result = run_checkpoint(database_url, FBE, run_id=run_id, home=tmp_path)

    assert result.status == "passed", result.message


def test_check_publishes_under_the_configured_folder_and_url(
    engine: Engine, db_env: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAG_SYNC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMAG_SYNC_DATA_DOCS_DIR", str(tmp_path / "published"))
    monkeypatch.setenv("EMAG_SYNC_DATA_DOCS_URL", "https://dq.example.com/emag")  # no trailing slash
    seed_catalogue(engine, FBE)

    out = CliRunner().invoke(app, ["check", "--account", "fbe"])

    assert out.exit_code == 0, out.output
    [url] = re.findall(r"data-quality report fbe: (\S+)", out.stdout)
    assert url.startswith("https://dq.example.com/emag/runs/emag_fbe/fbe-run-")
    assert (tmp_path / "published" / url.removeprefix("https://dq.example.com/emag/")).is_file()
    assert (tmp_path / "published" / "index.html").is_file()
    assert not (tmp_path / "home" / "gx" / "uncommitted" / "data_docs").exists()
    assert (tmp_path / "home" / "gx" / "uncommitted" / "validations").is_dir()


@pytest.mark.flow
def test_link_artifact_opens_the_runs_page_over_http(
    prefect_harness: None, engine: Engine, db_env: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.dq_check import emag_dq_check

    monkeypatch.setenv("EMAG_SYNC_HOME", str(tmp_path))
    seed_catalogue(engine, FBE)
    drop_offers(engine, FBE, ["EMG5"])
    with serving(data_docs_site(tmp_path)) as base_url:
        monkeypatch.setenv("EMAG_SYNC_DATA_DOCS_URL", base_url)
        state = emag_dq_check(accounts="fbe", return_state=True)
        assert state.is_failed()
        with get_client(sync_client=True) as client:
            [artifact] = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["emag-dq-fbe-docs"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                )
            )
        assert artifact.type == "markdown"
        [url] = re.findall(r"^\[.+\]\((\S+)\)$", str(artifact.data))
        assert url.startswith(base_url + "runs/emag_fbe/fbe-run-")
        answer = httpx.get(url)
        [link] = re.findall(r'href="([^"]+emag_fbe_active_products[^"]+)"', answer.text)
        validation = httpx.get(urljoin(url, link))
    assert answer.status_code == 200
    assert (
        "Data quality FBE" in answer.text
        and "1 active products without exactly one active offer: EMG5" in answer.text
    )
    assert rendered_markdown(str(artifact.data)).startswith(
        f'<p><a href="{url}">Data-quality report fbe, sync run'
    )
    assert validation.status_code == 200 and "sku: EMG5 · active_offers: 0" in validation.text


def test_docs_command_serves_the_site_and_refuses_a_busy_port(tmp_path: Path) -> None:
    site = data_docs_site(tmp_path)
    (site / "runs").mkdir(parents=True)
    (site / "index.html").write_text("<title>the index</title>", encoding="utf-8")
    env = {**_clean_env(), "EMAG_SYNC_HOME": str(tmp_path)}
    docs = subprocess.Popen(
        [str(Path(sys.executable).parent / "emag-sync"), "docs", "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = docs.stdout.readline() if docs.stdout else ""
        [base_url] = re.findall(r" on (http://127\.0\.0\.1:\d+/) ", line)
        assert str(site) in line
        assert "the index" in httpx.get(base_url).text
        assert httpx.get(base_url + "runs/").status_code == 404  # no folder listings
        assert httpx.get(base_url + "../../../gx/uncommitted").status_code == 404  # only the site
    finally:
        docs.terminate()
        docs.wait(timeout=10)

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = CliRunner().invoke(app, ["docs", "--port", str(port)], env={"EMAG_SYNC_HOME": str(tmp_path)})
    assert out.exit_code == 1
    assert out.stderr.strip().splitlines() == [
        f"emag-sync: cannot serve Data Docs on 127.0.0.1:{port}: Address already in use"
    ]


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("EMAG_")}


def test_preload_then_checkpoint_at_once(engine: Engine, database_url: URL, tmp_path: Path) -> None:
    """preload() twice, then a checkpoint while the background import is still running (a fresh process)."""
    run_id = seed_catalogue(engine, FBE)
    code = (
        "import sys, threading; from pathlib import Path;"
        "from expectations import checkpoint; from emag_sync.accounts import AccountType, legacy_account;"
        "checkpoint.preload(); checkpoint.preload();"
        "loaders = [t for t in threading.enumerate() if t.name == 'gx-preload'];"
        f"r = checkpoint.run_checkpoint(sys.argv[1], legacy_account(AccountType.FBE), run_id={run_id}, home=Path(sys.argv[2]));"
        "checkpoint.preload();"
        "print(len(loaders), r.status, 'great_expectations' in sys.modules)"
    )
    url = database_url.render_as_string(hide_password=False)
    out = subprocess.run(
        [sys.executable, "-c", code, url, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "passed", "True"]


def _three_accounts(engine: Engine) -> list[Account]:
    """Three registered accounts of one seller with consistent catalogues; the second loses SKU EMG3's offer."""
    accounts = [
        add_account(engine, name, platform="emag-ro", kind="main", seller="acme")
        for name in ("acme-a", "acme-b", "acme-c")
    ]
    for account in accounts:
        seed_catalogue(engine, account)
    drop_offers(engine, accounts[1], ["EMG3"])
    return accounts


def test_accounts_checked_in_one_run_keep_their_own_verdicts(
    engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    """One Great Expectations run for three accounts: the one that fails a critical expectation fails alone,
    named in its own message; each has its report page, its run history entry and its pages in the site."""
    a, b, c = _three_accounts(engine)
    with engine.connect() as conn:
        run_ids = dict(conn.execute(select(sync_runs.c.account, sync_runs.c.id)).all())

    results = checkpoint.run_checkpoints(
        database_url, [(a, run_ids["acme-a"]), (b, run_ids["acme-b"]), (c, None)], home=tmp_path
    )

    assert {name: r.status for name, r in results.items()} == {
        "acme-a": "passed",
        "acme-b": "failed",
        "acme-c": "passed",
    }
    assert results["acme-b"].message.startswith("acme-b: active offers 39 != active products 40")
    assert "EMG3" in results["acme-b"].message
    assert all(
        name in r.message and "acme-b" not in r.message for name, r in results.items() if name != "acme-b"
    )
    assert results["acme-c"].run_id == run_ids["acme-c"]  # the latest succeeded run, found without an id
    site = data_docs_site(tmp_path)
    index = (site / "index.html").read_text(encoding="utf-8")
    for name, result in results.items():
        assert result.report_page is not None and result.report_page.is_relative_to(
            site / "runs" / f"emag_{name}"
        )
        assert f"validations/emag_{name}_active_offers/{name}-run-{run_ids[name]}/" in index
        assert all(p.is_file() for p in _validation_pages(result))
    with engine.connect() as conn:
        recorded = dict(conn.execute(select(sync_runs.c.account, sync_runs.c.dq_status)).all())
    assert recorded == {"acme-a": "passed", "acme-b": "failed", "acme-c": None}  # a check without an id


@pytest.mark.flow
def test_dq_check_flow_checks_every_account_in_one_task_with_an_artifact_each(
    prefect_harness, db_env, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from flows.dq_check import emag_dq_check

    monkeypatch.setenv("EMAG_SYNC_HOME", str(tmp_path))
    _three_accounts(engine)

    state = emag_dq_check(accounts="acme-a,acme-b,acme-c", return_state=True)

    assert state.is_failed()
    assert state.message.startswith("acme-b: active offers 39 != active products 40")
    assert "acme-a" not in state.message and "acme-c" not in state.message
    keys = [artifact_key(name) for name in ("acme-a", "acme-b", "acme-c")]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys + [f"{k}-docs" for k in keys]))
        )
    assert [r.name for r in runs if r.name.startswith("data-quality")] == ["data-quality-3-accounts"]
    found = {a.key: a for a in artifacts if a.flow_run_id == state.state_details.flow_run_id}
    assert set(found) == {*keys, *(f"{k}-docs" for k in keys)}
    assert "**failed**" in found["emag-dq-acme-b"].data and "**passed**" in found["emag-dq-acme-a"].data


def test_an_account_gx_cannot_validate_fails_alone(
    engine: Engine, database_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acme-c's products query is broken (a table that does not exist): acme-c fails in one line naming it,
    acme-a keeps its verdict from the same run."""
    a, _, c = _three_accounts(engine)

    def query(asset: str, account: Account, run_id: int | None = None) -> str:
        if account.name == "acme-c" and asset == "products":
            return "SELECT sku, account FROM app.no_such_table"
        return asset_query(asset, account, run_id)

    monkeypatch.setattr(checkpoint, "asset_query", query)
    results = checkpoint.run_checkpoints(database_url, [(a, None), (c, None)], home=tmp_path)

    assert results["acme-a"].status == "passed" and results["acme-a"].report_page is not None
    failed = results["acme-c"]
    assert failed.status == "failed" and failed.critical_failures
    assert failed.message.startswith("acme-c: ") and "no_such_table" in failed.message
    assert len(failed.message.splitlines()) == 1 and "acme-a" not in failed.message
