"""sync-all as an operator runs it: prefect.yaml deployed with `prefect deploy` to a real Prefect server, a
process work pool with two workers, twelve accounts on three eMAG stand-ins at eMAG's pace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from benchmarks.pool import children_of, process_pool, start_sync_all, wait_final, worker_of_each_run
from emag_sandbox.accounts import SandboxAccount
from emag_sandbox.server import RunningSandbox, serve
from emag_sandbox.state import Faults, SandboxState
from emag_sync.accounts import Account, AccountType
from emag_sync.cli import app
from emag_sync.schema import offers, sync_runs
from tasks.fan_out import Child, ChildEnd, _outcome, group_key, plan_groups

# A flow run on a worker starts a process (imports, pull step): 10-40 s each on a busy 2-core machine.
RUN_TIMEOUT_SECONDS = 600


def accounts(*names: str) -> list[Account]:
    return [Account(name, AccountType.MAIN) for name in names]


def test_groups_are_even_deterministic_and_never_larger_than_asked() -> None:
    twelve = accounts(*(f"a{i:02}" for i in range(12)))
    groups = plan_groups(twelve, 5)
    assert [len(g) for g in groups] == [4, 4, 4]  # three runs either way: even ones, not 5 + 5 + 2
    assert sorted(a.name for g in groups for a in g) == [a.name for a in twelve]
    assert plan_groups(twelve, 5) == groups
    assert groups[0][:2] == accounts("a00", "a03")  # neighbours by name (one seller, one platform) spread
    assert plan_groups(twelve, 100) == [twelve]
    assert [len(g) for g in plan_groups(twelve, 1)] == [1] * 12
    assert plan_groups([], 3) == []


def test_a_retried_parent_asks_for_the_same_children() -> None:
    key = group_key("run-1", ["ro-main", "bg-main"])
    assert key == group_key("run-1", ["ro-main", "bg-main"]) != group_key("run-2", ["ro-main", "bg-main"])
    long = group_key("run-1", [f"seller-{i}-emag-ro-main" for i in range(300)])
    assert len(long) < 100


def test_a_child_that_completed_outweighs_an_earlier_attempts_account_table() -> None:
    """A retried child that could not write its own account table (the Prefect API busy) leaves the first
    attempt's, which says the account failed: the child's Completed state is what counts."""
    child = Child(("bg-main", "ro-main"), "id-1", "ultramarine-cougar")
    stale = {"account": "bg-main", "outcome": "failed", "cause": "bg-main (acme): product_offer/read page 2"}
    completed = ChildEnd("Completed", final=True, completed=True)
    assert _outcome("bg-main", child, completed, stale, None).ok

    failed = ChildEnd("Failed", final=True, completed=False, message="bg-main (acme): ...")
    outcome = _outcome("bg-main", child, failed, stale, None)
    assert (outcome.ok, outcome.cause) == (False, "bg-main (acme): product_offer/read page 2")
    crashed = ChildEnd("Crashed", final=True, completed=False, message="process exited with -9")
    assert _outcome("ro-main", child, crashed, None, None).cause == (
        "ro-main: its flow run ultramarine-cougar ended Crashed: process exited with -9"
    )
    running = ChildEnd("Running", final=False, completed=False)
    assert _outcome("ro-main", child, running, None, None).cause == (
        "ro-main: its flow run ultramarine-cougar did not finish (state Running)"
    )


def test_a_childs_account_table_is_literal_in_the_ui_and_read_back_as_written() -> None:
    """The UI renders a table's text cells as markdown: eMAG's words in a cause must show as they are there,
    and the parent must still read the cause the child wrote (it names it in its own message)."""
    import json

    from tasks.artifacts import literal_cells
    from tasks.fan_out import _rows
    from tests.helpers import rendered_markdown

    rows = [
        {"account": "brio-bg-fbe", "outcome": "failed", "run_id": 7, "data_quality": "",
         "cause": "brio-bg-fbe (brio): eMAG says: **Offer** [1](http://x.invalid) | <b>locked</b> `x`"},
        {"account": "ro_main", "outcome": "succeeded", "cause": "", "run_id": None, "data_quality": "passed"},
    ]  # fmt: skip
    shown = literal_cells(rows)
    for cell in (shown[0]["cause"], shown[0]["account"], shown[1]["account"]):
        assert "<" not in rendered_markdown(cell)[3:-5]  # text, not emphasis, a link, code or HTML
    assert _rows(json.dumps(shown)) == rows


# --- end to end ----------------------------------------------------------------------------------------

STAND_INS = [
    [SandboxAccount(f"{seller}-{country}-{kind}", f"emag-{country}", kind, products=size)
     for country, size in (("ro", 130), ("bg", 110)) for kind in ("main", "fbe")]
    for seller in ("acme", "brio", "cora")
]  # fmt: skip
NAMES = [account.name for stand_in in STAND_INS for account in stand_in]
DOWN = "brio-bg-fbe"


@pytest.fixture
def stand_ins() -> Iterator[list[RunningSandbox]]:
    with ExitStack() as stack:
        yield [stack.enter_context(serve(SandboxState(accounts=accs))) for accs in STAND_INS]


def requests_by_account(stand_ins: list[RunningSandbox]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for running in stand_ins:
        for request in running.state.request_log:
            if request.account is not None:
                counted[request.account] = counted.get(request.account, 0) + 1
    return counted


@pytest.mark.flow
@pytest.mark.timeout(1500)
def test_twelve_accounts_on_a_pool_of_two_workers_and_a_retry_that_reruns_only_the_failed_one(
    prefect_harness, stand_ins, database_url, tmp_path, monkeypatch, request
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Scheduled

    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "EMAG_SYNC_DATABASE_URL": database_url.render_as_string(hide_password=False),
        "EMAG_SYNC_HOME": str(tmp_path / "home"),
        "EMAG_MAX_ATTEMPTS": "2",
    }
    for running in stand_ins:
        env.update({k: v for k, v in running.env.items() if k != "EMAG_API_URL"})
    for name, value in env.items():
        if name.startswith("EMAG_"):
            monkeypatch.setenv(name, value)
    cli = CliRunner()
    for stand_in in STAND_INS:
        for account in stand_in:
            added = cli.invoke(app, ["accounts", "add", account.name, "--platform", account.platform,
                                     "--kind", account.kind, "--seller", account.name.split("-")[0]])  # fmt: skip
            assert added.exit_code == 0, added.output
    for legacy in ("main", "fbe"):  # the template database's install of two accounts: not part of this
        assert cli.invoke(app, ["accounts", "disable", legacy]).exit_code == 0

    pool = ExitStack()
    # Two flow runs at a time per worker: the parent takes one slot, so both workers must run children.
    pool.enter_context(process_pool(env, tmp_path / "workers", workers=("worker-a", "worker-b"), limit=2))
    request.addfinalizer(pool.close)

    down = next(r.state for r in stand_ins if DOWN in r.state.accounts)
    down.set_faults(DOWN, Faults(error_rate=1.0))
    parent = start_sync_all({"accounts_per_run": 3})
    ended = wait_final(parent.id, RUN_TIMEOUT_SECONDS)
    assert ended.state.is_failed(), ended.state
    message = ended.state.message or ""
    assert message.startswith("1 of 12 accounts failed: brio-bg-fbe (brio): "), message
    assert "\n" not in message

    children = children_of(parent.id)
    assert len(children) == 4  # 12 accounts, 3 per run
    by_worker = worker_of_each_run([str(c.id) for c in children])
    assert set(by_worker.values()) == {"worker-a", "worker-b"}, by_worker

    engine = create_engine(database_url)
    with engine.connect() as conn:
        runs = conn.execute(select(sync_runs.c.account, sync_runs.c.status)).all()
    assert sorted(a for a, s in runs if s == "succeeded") == sorted(set(NAMES) - {DOWN})

    # Retry on the parent (what the UI's Retry does): only the failed account's child runs again.
    down.set_faults(DOWN, Faults())
    requests_before = requests_by_account(stand_ins)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(parent.id, Scheduled(name="AwaitingRetry"), force=True)
    retried = wait_final(parent.id, RUN_TIMEOUT_SECONDS)
    assert retried.state.is_completed(), retried.state
    assert len(children_of(parent.id)) == 4  # the same children: none started twice

    with engine.connect() as conn:
        runs = conn.execute(select(sync_runs.c.account, sync_runs.c.status)).all()
        assert sorted(a for a, s in runs if s == "succeeded") == sorted(NAMES)
        assert [a for a, _ in runs].count(DOWN) >= 1
        assert all([a for a, _ in runs].count(name) == 1 for name in NAMES if name != DOWN)
        for running in stand_ins:
            for name in running.state.accounts:
                catalogue = running.state.catalogue_records(name)
                active = conn.scalar(
                    select(func.count())
                    .select_from(offers)
                    .where(offers.c.account == name, offers.c.is_active)
                )
                assert active == len(catalogue), name
    engine.dispose()
    requests_after = requests_by_account(stand_ins)
    asked_again = {name for name in NAMES if requests_after.get(name) != requests_before.get(name)}
    assert asked_again == {DOWN}
    for running in stand_ins:
        assert [r for r in running.state.request_log if r.status_code == 429] == []
