"""The emag-product-sync flow end to end: sandbox over loopback, embedded PostgreSQL, Prefect harness."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, func, select, text

from emag_sandbox.state import Faults, SandboxState
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.options import SyncOptions
from emag_sync.schema import offers, products, sync_runs
from tests.helpers import assert_matches_catalogue, assert_resumed_after

pytestmark = pytest.mark.flow

FBE, MAIN = legacy_account(AccountType.FBE), legacy_account(AccountType.MAIN)


@pytest.fixture
def sandbox_state() -> SandboxState:
    """Big enough to hold the incident's EMG469 in FBE (5 pages), small enough to stay fast."""
    return SandboxState(products=480, main_products=300, rate_limit=False)


@pytest.fixture
def flow_env(prefect_harness, sandbox_env, db_env):
    """Sandbox + fresh database + Prefect harness, as the flow sees them through the environment."""
    return sandbox_env


def _pages_read(state: SandboxState, account: AccountType) -> list[int]:
    return [
        r.page
        for r in state.request_log
        if r.account == str(account) and r.action == "read" and r.status_code == 200
    ]


def test_both_accounts_end_to_end(flow_env, sandbox_state, database_url) -> None:
    from flows.sync import emag_product_sync

    summaries = emag_product_sync(accounts="both", options=SyncOptions(pages_per_batch=2))

    assert {s.account_type: s.status for s in summaries} == {"main": "succeeded", "fbe": "succeeded"}
    engine = create_engine(database_url)
    for account in (MAIN, FBE):
        assert_matches_catalogue(engine, sandbox_state, account)

    # The incident's verification SQL, unchanged, answers from the sandbox's catalogue.
    fbe_count = len(sandbox_state.catalogue_records(FBE))
    emg469 = sandbox_state.record_by_sku(FBE, "EMG469")
    with engine.connect() as conn:
        assert (
            conn.scalar(text("SELECT COUNT(*) FROM app.emag_product_offers_v2 WHERE account_type = 'fbe';"))
            == fbe_count
        )
        row = conn.execute(text(
            "SELECT sku, emag_offer_id, price, min_sale_price, max_sale_price, stock, reserved_stock, "
            "available_stock, visibility, sync_attempts FROM app.emag_product_offers_v2 "
            "WHERE sku = 'EMG469' AND account_type = 'fbe';"
        )).mappings().one()  # fmt: skip
        runs = conn.execute(select(sync_runs)).mappings().all()
    assert row["emag_offer_id"] == emg469["id"]
    assert row["price"] == Decimal(emg469["sale_price"])
    assert row["min_sale_price"] == Decimal(emg469["min_sale_price"])
    assert row["max_sale_price"] == Decimal(emg469["max_sale_price"])
    assert row["stock"] == emg469["general_stock"]
    assert row["available_stock"] == emg469["estimated_stock"]
    assert row["reserved_stock"] == max(emg469["general_stock"] - emg469["estimated_stock"], 0)
    assert row["sync_attempts"] == 1
    assert {r["account_type"]: (r["status"], r["dq_status"]) for r in runs} == {
        "main": ("succeeded", "passed"),
        "fbe": ("succeeded", "passed"),
    }
    engine.dispose()
    _assert_artifacts(
        ["emag-sync-summary", "emag-sync-progress-fbe", "emag-sync-progress-main", "emag-dq-fbe"]
    )


def _assert_artifacts(keys: list[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = {
            a.key
            for a in client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
        }
    assert set(keys) <= found


def test_second_run_changes_nothing_then_follows_removals_and_reprices(
    flow_env, sandbox_state, database_url
) -> None:
    from flows.sync import emag_product_sync

    emag_product_sync(accounts="fbe")
    engine = create_engine(database_url)
    with engine.connect() as conn:
        before = dict(conn.execute(select(offers.c.sku, offers.c.updated_at)).all())
    removed = sandbox_state.remove_records(FBE, 3)
    repriced = sandbox_state.reprice_records(FBE, 4)

    [summary] = emag_product_sync(accounts="fbe")

    assert (summary.rows_inserted, summary.rows_updated, summary.rows_deactivated) == (0, 4, 3)
    with engine.connect() as conn:
        after = dict(conn.execute(select(offers.c.sku, offers.c.updated_at)).all())
        inactive = set(conn.scalars(select(offers.c.emag_offer_id).where(~offers.c.is_active)))
    assert set(removed) == inactive
    changed = {sku for sku in before if after[sku] != before[sku]}
    assert len(changed) == len(removed) + len(repriced)  # only these rows were rewritten
    assert_matches_catalogue(engine, sandbox_state, FBE)
    engine.dispose()


def test_outage_mid_run_fails_keeps_batches_and_resume_reads_the_rest_then_the_start(
    flow_env, sandbox_state, database_url
) -> None:
    from flows.sync import emag_product_sync

    sandbox_state.set_faults(FBE, Faults(error_pages={2}))  # 480 FBE records: pages 1..5 of 100
    with pytest.raises(Exception, match="(?i)fbe: product_offer/read page 2"):
        emag_product_sync(accounts="both", options=SyncOptions(pages_per_batch=1))

    engine = create_engine(database_url)
    with engine.connect() as conn:
        runs = {r["account_type"]: r for r in conn.execute(select(sync_runs)).mappings()}
        fbe_rows = conn.scalar(select(func.count()).select_from(offers).where(offers.c.account_type == "fbe"))
    assert runs["main"]["status"] == "succeeded"  # the other account's work stays
    assert runs["fbe"]["status"] == "failed" and "page 2" in runs["fbe"]["error"]
    assert runs["fbe"]["last_committed_page"] == 1 and fbe_rows == 100  # batch 1 committed, no half batch
    assert_matches_catalogue(engine, sandbox_state, MAIN)

    sandbox_state.set_faults(FBE, Faults())
    sandbox_state.request_log.clear()
    [summary] = emag_product_sync(accounts="fbe", options=SyncOptions(pages_per_batch=1, resume=True))

    assert summary.resumed_count and summary.id == runs["fbe"]["id"]
    assert_resumed_after(_pages_read(sandbox_state, FBE), 1)  # after page 1, then page 1 again
    assert_matches_catalogue(engine, sandbox_state, FBE)
    engine.dispose()


def test_prefect_retry_of_the_failed_flow_run_resumes(flow_env, sandbox_state, database_url) -> None:
    """What the UI's Retry does: the same flow run is scheduled again and re-executed."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow_sync
    from prefect.states import AwaitingRetry

    from flows.sync import emag_product_sync

    sandbox_state.set_faults(FBE, Faults(error_pages={3}))
    state = emag_product_sync(accounts="both", options=SyncOptions(pages_per_batch=1), return_state=True)
    assert state.is_failed()
    flow_run_id = state.state_details.flow_run_id
    # The failed attempt's summary has FBE's row too: how far it got before page 3 failed.
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        [failed_summary] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=["emag-sync-summary"]),
            )
        )
    assert "| fbe | failed | not run | 480 | 200 | 0 | 0 | 0 | 0 |" in failed_summary.data, (
        failed_summary.data
    )
    assert r"| fbe | 2\/5 | 3 | 0 | 0 |" in failed_summary.data, failed_summary.data

    sandbox_state.set_faults(FBE, Faults())
    sandbox_state.request_log.clear()
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)
        flow_run = client.read_flow_run(flow_run_id)
    retried = run_flow_sync(
        emag_product_sync, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
    )

    assert retried.is_completed(), retried.message
    assert _pages_read(sandbox_state, MAIN) == []  # MAIN finished in the first attempt: skipped
    assert_resumed_after(_pages_read(sandbox_state, FBE), 2)
    engine = create_engine(database_url)
    for account in (MAIN, FBE):
        assert_matches_catalogue(engine, sandbox_state, account)
    with engine.connect() as conn:
        statuses = conn.execute(
            select(sync_runs.c.account_type, sync_runs.c.status, sync_runs.c.flow_run_id)
        ).all()
    assert sorted(statuses) == [
        ("fbe", "succeeded", str(flow_run_id)),
        ("main", "succeeded", str(flow_run_id)),
    ]
    engine.dispose()

    # One summary for the whole flow run, resumed part included, and one progress bar per account.

    # The retry's summary replaces the failed attempt's under the same key; the server may take a moment to
    # show it after the run's final state (artifacts are written by a background client).
    deadline = time.monotonic() + 30
    while True:
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
        summaries = [a for a in artifacts if a.key == "emag-sync-summary"]
        if any("succeeded" in str(a.data) and "resumed" in str(a.data) for a in summaries):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    keys = sorted(a.key for a in artifacts if a.key and a.key.startswith("emag-sync-"))
    assert keys == [
        "emag-sync-accounts",
        "emag-sync-progress-fbe",
        "emag-sync-progress-main",
        "emag-sync-summary",
    ], keys
    [table] = [a for a in artifacts if a.key == "emag-sync-accounts"]  # one account table, the retry's
    assert [(row["account"], row["outcome"]) for row in json.loads(table.data)] == [
        ("main", "succeeded"),
        ("fbe", "succeeded"),
    ]
    [summary] = [a for a in artifacts if a.key == "emag-sync-summary"]
    assert r"| fbe | succeeded \(resumed\) |" in summary.data and "| main | succeeded |" in summary.data
    assert r"| main | 3\/3 |" in summary.data  # pages holding records, of the 3 eMAG counted
    [fbe_progress] = [a for a in artifacts if a.key == "emag-sync-progress-fbe"]
    assert (
        fbe_progress.data == 100.0 and fbe_progress.description == "FBE: 5 of 5 pages committed (480 records)"
    )


def test_incident_offers_silently_dropped_fails_the_flow_with_counts(
    flow_env, sandbox_state, database_url
) -> None:
    """The incident reproduced: FBE offers silently not written (a trigger swallows them)."""
    from flows.sync import emag_product_sync

    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE FUNCTION app.swallow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;"
            "CREATE TRIGGER swallow BEFORE INSERT ON app.emag_product_offers_v2 FOR EACH ROW "
            "WHEN (NEW.account_type = 'fbe') EXECUTE FUNCTION app.swallow();"
        ))  # fmt: skip

    fbe_count = len(sandbox_state.catalogue_records(FBE))
    with pytest.raises(Exception, match=f"fbe: active offers 0 != active products {fbe_count}"):
        emag_product_sync(accounts="both")

    with engine.connect() as conn:  # ELT: what was loaded stays; the run history records the failed check
        dq = dict(conn.execute(select(sync_runs.c.account_type, sync_runs.c.dq_status)).all())
        fbe_products = conn.scalar(
            select(func.count()).select_from(products).where(products.c.account_type == "fbe")
        )
    assert dq == {"main": "passed", "fbe": "failed"} and fbe_products == fbe_count
    engine.dispose()


def test_cli_sync_fails_at_once_on_a_locked_account_or_waits_when_asked(
    flow_env, sandbox_state, database_url
) -> None:
    """Another sync of FBE holds the account lock: `sync` fails at once, `sync --wait-for-lock` waits."""
    import threading

    from typer.testing import CliRunner

    from emag_sync.cli import app
    from emag_sync.locks import account_lock

    engine = create_engine(database_url)
    holding, release = threading.Event(), threading.Event()

    def other_sync() -> None:
        with account_lock(engine, FBE):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=other_sync)
    holder.start()
    holding.wait(10)
    runner = CliRunner()
    try:
        refused = runner.invoke(app, ["sync", "--account", "fbe"])
        assert refused.exit_code == 1
        assert "fbe: another sync of this account is running" in refused.output
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(sync_runs)) == 0  # nothing written
        threading.Timer(1.0, release.set).start()
        waited = runner.invoke(app, ["sync", "--account", "fbe", "--wait-for-lock"])
    finally:
        release.set()
        holder.join()
    assert waited.exit_code == 0, waited.output
    assert_matches_catalogue(engine, sandbox_state, FBE)
    engine.dispose()
