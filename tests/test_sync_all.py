"""sync-all as an operator runs it: prefect.yaml deployed with `prefect deploy` to a real Prefect server, a
process work pool with two workers, twelve accounts on three eMAG stand-ins at eMAG's pace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from emag_sandbox.accounts import SandboxAccount
from emag_sandbox.server import RunningSandbox, serve
from emag_sandbox.state import Faults, SandboxState
from emag_sync.accounts import Account, AccountType
from emag_sync.cli import app
from emag_sync.schema import offers, sync_runs
from tasks.fan_out import group_key, plan_groups

ROOT = Path(__file__).resolve().parent.parent
POOL = "emag-sync-pool"  # prefect.yaml's
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


# --- end to end ----------------------------------------------------------------------------------------

STAND_INS = [
    [SandboxAccount(f"{seller}-{country}-{kind}", f"emag-{country}", kind, products=size)
     for country, size in (("ro", 130), ("bg", 110)) for kind in ("main", "fbe")]
    for seller in ("acme", "brio", "cora")
]  # fmt: skip
NAMES = [account.name for stand_in in STAND_INS for account in stand_in]
DOWN = "brio-bg-fbe"


def prefect(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "prefect", *args]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def stand_ins() -> Iterator[list[RunningSandbox]]:
    with ExitStack() as stack:
        yield [stack.enter_context(serve(SandboxState(accounts=accs))) for accs in STAND_INS]


@pytest.fixture
def workers(prefect_harness) -> Iterator:
    children: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], name: str, log: Path) -> None:
        # Two flow runs at a time per worker: the parent takes one slot, so both workers must run children.
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name,
                   "--limit", "2"]  # fmt: skip
        out = log.open("wb")
        children.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))

    yield start
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()


def worker_of_each_run(flow_run_ids: list[str]) -> dict[str, str]:
    """Which worker submitted each flow run, from the events the workers sent."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        answer = client._client.post(
            "/events/filter",
            json={"filter": {"event": {"name": ["prefect.worker.submitted-flow-run"]}}, "limit": 50},
        )
    answer.raise_for_status()
    found = {}
    for event in answer.json()["events"]:
        worker = event["resource"].get("prefect.resource.name")
        for related in event.get("related", []):
            resource = related.get("prefect.resource.id", "")
            if resource.startswith("prefect.flow-run."):
                found[resource.removeprefix("prefect.flow-run.")] = worker
    return {run_id: found[run_id] for run_id in flow_run_ids if run_id in found}


def requests_by_account(stand_ins: list[RunningSandbox]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for running in stand_ins:
        for request in running.state.request_log:
            if request.account is not None:
                counted[request.account] = counted.get(request.account, 0) + 1
    return counted


def wait_final(flow_run_id) -> object:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final() and run.state.name != "AwaitingRetry":
                return run
            time.sleep(1)
    pytest.fail(f"flow run {flow_run_id} did not finish within {RUN_TIMEOUT_SECONDS} s")


def children_of(parent_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )


@pytest.mark.flow
@pytest.mark.timeout(1500)
def test_twelve_accounts_on_a_pool_of_two_workers_and_a_retry_that_reruns_only_the_failed_one(
    prefect_harness, stand_ins, workers, database_url, tmp_path, monkeypatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Scheduled

    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
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

    prefect(env, "work-pool", "create", POOL, "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--name", "sync-all", "--name", "sync-accounts", timeout=180)
    workers(env, "worker-a", tmp_path / "worker-a.log")
    workers(env, "worker-b", tmp_path / "worker-b.log")

    down = next(r.state for r in stand_ins if DOWN in r.state.accounts)
    down.set_faults(DOWN, Faults(error_rate=1.0))
    parent = run_deployment(
        "emag-sync-all/sync-all", parameters={"accounts_per_run": 3}, timeout=0, as_subflow=False
    )
    ended = wait_final(parent.id)
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
    retried = wait_final(parent.id)
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
