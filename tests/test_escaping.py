"""External text is data, never markup: the terminal (rich), the markdown artifacts and Data Docs (HTML).

Faults: eMAG messages and SKUs holding rich markup (``[/data]``, ``KIT[/2]``), bracketed words
(``[sale_price]``), markdown and HTML (``<img src=x onerror=alert(1)>``, ``<script>``).
"""

from __future__ import annotations

import html
import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from emag_sandbox.server import RunningSandbox
from emag_sandbox.state import Faults, RequestRefused, SandboxState
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.cli import app
from emag_sync.escaping import markdown_link, markdown_text
from emag_sync.run_row import COUNTER_LABELS
from emag_sync.runs import recent_runs
from emag_sync.schema import offers, products, sync_runs
from expectations.checkpoint import data_docs_site, run_checkpoint
from expectations.report import dq_markdown
from tasks.artifacts import summary_markdown
from tests.helpers import rendered_markdown
from tests.test_expectations import drop_offers, seed_catalogue
from tests.test_prices import seed_offers

FBE, MAIN = legacy_account(AccountType.FBE), legacy_account(AccountType.MAIN)
RICH = "Invalid value [/data] for field [sale_price]"
IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"
HOSTILE = [
    RICH,
    IMG,
    SCRIPT,
    "KIT[/2] **bold** _it_ `code` ~~gone~~ a|b",
    "[click](javascript:alert(1)) ![i](http://x/t.png) <http://x> &amp; &#60;",
    "# heading",
    "- item",
    "1. item",
    "> quote",
    "```mermaid",
    "line one\nline two\r\n\n# three",
    r"back\slash \*",
]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _texts(rendered: str) -> str:
    """The text a person reads in rendered HTML (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", rendered))


# --- markdown ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_markdown_text_renders_as_the_same_text_and_no_tag(value: str) -> None:
    rendered = rendered_markdown(markdown_text(value))
    assert rendered.startswith("<p>") and rendered.endswith("</p>\n")
    assert "<" not in rendered[3:-5]  # no tag inside the paragraph
    assert _texts(rendered).strip() == " ".join(value.splitlines())


def test_markdown_link_keeps_its_text_and_one_destination() -> None:
    rendered = rendered_markdown(markdown_link("report](javascript:alert(1)) " + IMG, "http://h/a b/(x)<y>"))
    [(href, text)] = re.findall(r'^<p><a href="([^"]*)">(.*)</a></p>$', rendered.strip())
    assert href == "http://h/a%20b/%28x%29%3Cy%3E"
    assert html.unescape(text) == "report](javascript:alert(1)) " + IMG


def test_summary_artifact_shows_emag_text_literally(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(sync_runs).values(
                account_type="fbe",
                account="fbe",
                status="failed",
                items_per_page=100,
                pages_per_batch=5,
                error=RICH,
            )
        )
    failures = {"fbe": f"fbe: page 2: eMAG refused: {IMG} {SCRIPT} | **x** [/data]"}

    rendered = rendered_markdown(summary_markdown(recent_runs(engine), {}, failures))

    assert "<img" not in rendered and "<script" not in rendered and "<strong>x" not in rendered
    assert f"fbe: page 2: eMAG refused: {IMG} {SCRIPT} | **x** [/data]" in _texts(rendered)
    assert rendered.count("<td>") == 4 + len(
        COUNTER_LABELS
    )  # one row in each table: every cell in its column


# --- Data Docs, the run page and the data-quality artifact ------------------------------------------


def test_hostile_skus_render_as_text_everywhere_and_do_not_change_outcomes(
    engine: Engine, database_url: URL, tmp_path: Path
) -> None:
    run_id = seed_catalogue(engine, FBE)
    renamed = {"EMG3": IMG, "EMG4": SCRIPT, "EMG5": RICH}
    with engine.begin() as conn:
        for old, new in renamed.items():
            for table in (products, offers):
                conn.execute(update(table).where(table.c.sku == old).values(sku=new))
        conn.execute(update(offers).where(offers.c.sku == SCRIPT).values(currency="<b>XX</b>"))
    drop_offers(engine, FBE, [IMG, RICH])

    result = run_checkpoint(database_url, FBE, run_id=run_id, home=tmp_path)

    outcomes = {row.name: row.passed for row in result.rows}
    assert outcomes["active_product_has_one_active_offer"] is False
    assert outcomes["active_offer_has_active_product"] is True  # raw data, so the join still matches
    assert outcomes["currency_in_platform_set"] is False
    pages = list(data_docs_site(tmp_path).rglob("*.html"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    for live in ("<img src=x", "<script>alert", "<b>XX"):
        assert live not in text, [p for p in pages if live in p.read_text(encoding="utf-8")]
    assert "sku: &lt;img src=x onerror=alert(1)&gt; · active_offers: 0" in text  # GX's validation page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the sku index column
    assert "&lt;b&gt;XX&lt;/b&gt;" in text  # the unexpected value itself
    assert result.report_page is not None
    page = result.report_page.read_text(encoding="utf-8")
    assert "<img src=x" not in page and "<script>alert" not in page
    assert html.escape(IMG) in page and html.escape(RICH) in page

    rendered = rendered_markdown(dq_markdown(result))
    assert "<img" not in rendered and "<script" not in rendered and "<b>" not in rendered
    assert IMG in _texts(rendered) and RICH in _texts(rendered)


# --- the terminal -----------------------------------------------------------------------------------


class EmagWithMarkupInItsMessages(SandboxState):
    """The sandbox, whose isError answers (its ``error_pages`` fault) quote rich markup and brackets."""

    def read(self, account: AccountType, data: object) -> list[dict]:
        try:
            return super().read(account, data)
        except RequestRefused:
            raise RequestRefused([RICH]) from None


@pytest.mark.flow
def test_sync_and_runs_show_an_emag_message_with_markup_as_it_is(
    prefect_harness: None, serve_sandbox, db_env: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = EmagWithMarkupInItsMessages(products=250, main_products=200, rate_limit=False)
    state.set_faults(FBE, Faults(error_pages={2}))
    monkeypatch.setenv("EMAG_SYNC_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")  # what the command sets itself
    runner = CliRunner()

    with serve_sandbox(state) as sandbox:
        for name, value in sandbox.env.items():
            monkeypatch.setenv(name, value)
        synced = runner.invoke(app, ["sync", "--account", "fbe"])

    assert synced.exit_code == 1, synced.output
    assert isinstance(synced.exception, SystemExit)  # typer's exit 1, not a MarkupError
    [failed] = [line for line in synced.stderr.splitlines() if line.startswith("sync failed:")]
    assert RICH in failed and "Traceback" not in synced.output
    assert RICH in _one_line(synced.stdout)  # the summary's caption

    listed = runner.invoke(app, ["runs"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert RICH in _one_line(listed.stdout)


def test_runs_table_keeps_brackets_and_markup_from_the_database(engine: Engine, db_env: URL) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(sync_runs).values(
                account_type="main", account="main", status="failed", items_per_page=100, pages_per_batch=5,
                error=f"{RICH} :warning: [bold]not bold[/bold]",
            )
        )  # fmt: skip

    listed = CliRunner().invoke(app, ["runs"], terminal_width=200)

    assert listed.exit_code == 0, listed.output
    assert f"{RICH} :warning: [bold]not bold[/bold]" in _one_line(listed.stdout)


def test_price_tables_show_a_sku_with_markup(
    sandbox_env: RunningSandbox, engine: Engine, db_env: URL, tmp_path: Path
) -> None:
    seed_offers(engine, sandbox_env.state, FBE)
    with engine.begin() as conn:
        for table in (products, offers):
            conn.execute(update(table).where(table.c.sku == "EMG7").values(sku="KIT[/2]"))
        price = conn.scalar(select(offers.c.min_sale_price).where(offers.c.sku == "KIT[/2]"))
    new_price = f"{Decimal(price):.2f}"
    runner = CliRunner()

    single = runner.invoke(
        app, ["update-price", "--sku", "KIT[/2]", "--account", "fbe", "--price", new_price, "--dry-run"]
    )
    assert single.exit_code == 0, single.output
    assert "KIT[/2] on eMAG FBE (offer id" in single.stdout  # the changes table's title
    assert "KIT[/2] on eMAG FBE: valid; nothing sent (--dry-run)" in single.stdout

    csv_file = tmp_path / "prices.csv"
    csv_file.write_text(f"sku,account,price\nKIT[/2],fbe,{new_price}\n[/x],fbe,1\n", encoding="utf-8")
    bulk = runner.invoke(app, ["update-price", "--file", str(csv_file)], terminal_width=200)
    assert bulk.exit_code == 1, bulk.output  # the second line is refused
    assert isinstance(bulk.exception, SystemExit) and "Traceback" not in bulk.output
    [applied] = [line for line in bulk.stdout.splitlines() if "KIT[/2]" in line]
    assert "applied" in applied
    assert any("[/x]" in line and "not published" in line for line in bulk.stdout.splitlines())


def test_check_prints_a_warning_naming_a_sku_with_brackets(
    engine: Engine, db_env: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAG_SYNC_HOME", str(tmp_path))
    seed_catalogue(engine, FBE)
    with engine.begin() as conn:
        for table in (products, offers):
            conn.execute(update(table).where(table.c.sku == "EMG7").values(sku="KIT[/2] [sale_price]"))
        conn.execute(update(offers).where(offers.c.sku == "KIT[/2] [sale_price]").values(sale_price=999))

    out = CliRunner().invoke(app, ["check", "--account", "fbe"], terminal_width=200)

    assert out.exit_code == 0, out.output
    assert (
        "warning: fbe: 1 active offers with sale_price > max_sale_price: KIT[/2] [sale_price]" in out.stdout
    )
