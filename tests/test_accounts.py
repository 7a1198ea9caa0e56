"""Accounts as data end to end: a seller on three platforms registered by name, credentials found by name,
each account synced into rows that carry its name, checked with its platform's currency."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from emag_sandbox.accounts import SandboxAccount
from emag_sandbox.state import Faults, SandboxState
from emag_sync.cli import app
from emag_sync.schema import offers, products, sync_runs

pytestmark = pytest.mark.flow

# A seller on eMAG Romania, Bulgaria and Hungary, MAIN and FBE on each; every account at eMAG's 3/s.
SELLER = [
    SandboxAccount(f"{country}-{kind}", f"emag-{country}", kind, products=size)
    for country, size in (("ro", 120), ("bg", 150), ("hu", 90))
    for kind in ("main", "fbe")
]
NAMES = [account.name for account in SELLER]


@pytest.fixture
def sandbox_state() -> SandboxState:
    return SandboxState(accounts=SELLER)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_seller_on_three_platforms(
    prefect_harness, sandbox_env, sandbox_state, db_env, database_url, monkeypatch
) -> None:
    for account in SELLER:
        added = run("accounts", "add", account.name, "--platform", account.platform, "--kind", account.kind,
                    "--seller", "acme")  # fmt: skip
        assert added.exit_code == 0, added.output
        assert f"account {account.name} registered" in added.stdout

    listing = run("accounts", "list", "--format", "json")
    assert listing.exit_code == 0, "".join(__import__("traceback").format_exception(listing.exception))
    listed = json.loads(listing.stdout)
    mine = {row["name"]: row for row in listed if row["seller"] == "acme"}
    assert set(mine) == set(NAMES)
    assert mine["bg-fbe"]["credentials"] == (
        "username from the environment (EMAG_BG_FBE_USERNAME); password from the environment (EMAG_BG_FBE_PASSWORD)"
    )
    assert mine["bg-fbe"]["api_url"] == sandbox_env.url_for("emag-bg")
    assert "sandbox-bg-fbe-password" not in json.dumps(listed)

    tested = run("accounts", "test", "bg-fbe")
    assert tested.exit_code == 0 and tested.stdout.startswith(
        "bg-fbe (acme): ok, 150 offers on eMAG Bulgaria"
    )

    wrong = run("sync", "--account", "ro-main,nope")
    assert wrong.exit_code == 1
    assert (
        wrong.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "no account 'nope'; registered: bg-fbe, bg-main, fbe, hu-fbe, hu-main, main, ro-fbe, ro-main"
        )
    )

    synced = run("sync", "--account", "all", "--seller", "acme")
    assert synced.exit_code == 0, synced.output
    engine = create_engine(database_url)
    with engine.connect() as conn:
        for account in SELLER:
            catalogue = sandbox_state.catalogue_records(account.name)
            count = select(func.count())
            assert conn.scalar(count.select_from(products).where(products.c.account == account.name,
                                                                 products.c.is_active)) == len(catalogue)  # fmt: skip
            assert conn.scalar(count.select_from(offers).where(offers.c.account == account.name,
                                                               offers.c.is_active)) == len(catalogue)  # fmt: skip
            kinds = (
                conn.execute(select(offers.c.account_type).where(offers.c.account == account.name).distinct())
                .scalars()
                .all()
            )
            assert kinds == [account.kind]
        currencies = {
            name: currency
            for name, currency in conn.execute(
                select(offers.c.account, func.min(offers.c.currency)).group_by(offers.c.account)
            )
        }
        assert currencies == {name: {"ro": "RON", "bg": "EUR", "hu": "HUF"}[name[:2]] for name in NAMES}
        runs = {r.account: (r.status, r.dq_status, r.rate_limited) for r in conn.execute(select(sync_runs))}
        assert runs == {name: ("succeeded", "passed", 0) for name in NAMES}
        # the same SKU in two accounts is two rows, one in each (keyed by sku and account)
        shared = conn.execute(text(
            "SELECT count(*) FROM (SELECT sku FROM app.emag_product_offers_v2 GROUP BY sku"
            " HAVING count(DISTINCT account) > 1) s"
        )).scalar()  # fmt: skip
        assert shared > 0
    engine.dispose()
    assert [r for r in sandbox_state.request_log if r.status_code == 429] == []  # each at its own 3/s

    history = json.loads(run("runs", "--format", "json").stdout)
    assert {row["account"] for row in history} == set(NAMES)
    only = json.loads(run("runs", "--account", "bg-fbe", "--format", "json").stdout)
    assert [row["account"] for row in only] == ["bg-fbe"]
    assert "no account 'nope'" in run("runs", "--account", "nope").stderr

    # A price update by name goes to that account on its platform, and nowhere else.
    offer = next(r for r in sandbox_state.catalogue_records("bg-main") if r["status"] == 1)
    price = (Decimal(offer["sale_price"]) * Decimal("1.01")).quantize(Decimal("0.01"))
    updated = run(
        "update-price", "--sku", offer["part_number"], "--account", "bg-main", "--price", str(price)
    )
    assert updated.exit_code == 0, updated.output
    assert [(save.account, save.entity["id"]) for save in sandbox_state.saves] == [("bg-main", offer["id"])]

    # One account without credentials and one whose eMAG is down: one line naming each, the others sync.
    password = sandbox_env.env["EMAG_RO_FBE_PASSWORD"]
    monkeypatch.delenv("EMAG_RO_FBE_PASSWORD")
    monkeypatch.setenv("EMAG_MAX_ATTEMPTS", "2")
    sandbox_state.set_faults("hu-fbe", Faults(error_rate=1.0))
    since = max(r["id"] for r in history)
    partly = run("sync", "--account", "all", "--seller", "acme")
    assert partly.exit_code == 1
    [line] = [ln for ln in partly.stderr.splitlines() if ln.startswith("sync failed:")]
    assert (
        "ro-fbe (acme): credentials missing, set EMAG_RO_FBE_PASSWORD" in line and "hu-fbe (acme): " in line
    )
    later = [r for r in json.loads(run("runs", "--format", "json").stdout) if r["id"] > since]
    assert sorted(r["account"] for r in later if r["status"] == "succeeded") == sorted(
        set(NAMES) - {"ro-fbe", "hu-fbe"}
    )
    sandbox_state.set_faults("hu-fbe", Faults())
    monkeypatch.setenv("EMAG_RO_FBE_PASSWORD", password)

    run("accounts", "disable", "hu-main")
    skipped = run("sync", "--account", "all", "--seller", "acme")
    assert skipped.exit_code == 0, skipped.output
    refused = run("sync", "--account", "hu-main")
    assert refused.exit_code == 1 and "account hu-main is disabled" in refused.stderr

    kept = run("accounts", "remove", "ro-main")
    assert kept.exit_code == 1 and "nothing was removed" in kept.stderr
    removed = run("accounts", "remove", "ro-main", "--keep-data")
    assert removed.exit_code == 0 and "are kept (products and offers inactive)" in removed.stdout
