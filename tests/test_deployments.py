"""Deployments run as an operator runs them: `emag-sync serve` against a real Prefect server, runs triggered
through the API, their state and logs read back from the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emag_sandbox.server import RunningSandbox
from emag_sync.cli import app

SERVE_STARTUP_SECONDS = 90
RUN_TIMEOUT_SECONDS = 180
# The last log lines of a run may reach the server a few seconds after its final state.
LOGS_TIMEOUT_SECONDS = 30


def served_env(running: RunningSandbox, database_url, home: Path, **extra: str) -> dict[str, str]:
    """A served process's environment: this session's Prefect server, database and sandbox; logs to the API."""
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        **running.env,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_LOGGING_TO_API_ENABLED": "true",  # the session turns it off; a served run must send its logs
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "EMAG_SYNC_DATABASE_URL": database_url.render_as_string(hide_password=False),
        "EMAG_SYNC_HOME": str(home),
        **extra,
    }


@pytest.fixture
def serve_deployments(prefect_harness) -> Iterator:
    """``start(env, *names)``: `emag-sync serve NAMES` in a child process, stopped after the test."""
    children: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *names: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-c", "from emag_sync.cli import app; app()", "serve", *names]
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children.append(child)
        return child

    yield start
    for child in children:
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()


def wait_for_deployment(name: str, child: subprocess.Popen[bytes]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + SERVE_STARTUP_SECONDS
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert child.poll() is None, f"emag-sync serve exited with {child.returncode}"
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                time.sleep(0.5)
    pytest.fail(f"deployment {name} was not registered within {SERVE_STARTUP_SECONDS} s")


def run_logs(flow_run_id, until: Callable[[list[str]], bool] = lambda messages: True) -> list:
    """Every log line of a flow run (its tasks' included), as the UI shows them, once ``until`` holds for
    their messages (or after LOGS_TIMEOUT_SECONDS). The run's process sends its logs in batches, so the
    last ones may reach the server after the run's final state does."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + LOGS_TIMEOUT_SECONDS
    while True:
        logs: list = []
        with get_client(sync_client=True) as client:
            only = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            while page := client.read_logs(log_filter=only, offset=len(logs)):
                logs.extend(page)
        if until([log.message for log in logs]) or time.monotonic() > deadline:
            return logs
        time.sleep(0.5)


@pytest.mark.flow
def test_a_deployed_sync_with_a_wrong_api_url_fails_like_the_cli_in_one_line(
    serve_deployments, sandbox_server, database_url, tmp_path, monkeypatch
) -> None:
    """Fault: EMAG_API_URL points at a closed port, for a served deployment and for the command line.

    Both end with the same one-line cause naming EMAG_API_URL and the URL; the flow run's logs in the UI
    hold that line and no traceback; nothing is written.
    """
    from prefect.deployments import run_deployment

    wrong = "http://127.0.0.1:9/api-3"
    env = served_env(
        sandbox_server, database_url, tmp_path / "home", EMAG_API_URL=wrong, EMAG_MAX_ATTEMPTS="2"
    )
    child = serve_deployments(env, "sync-fbe")
    wait_for_deployment("emag-product-sync/sync-fbe", child)

    flow_run = run_deployment("emag-product-sync/sync-fbe", timeout=RUN_TIMEOUT_SECONDS)
    assert flow_run.state is not None and flow_run.state.is_failed(), flow_run.state
    message = flow_run.state.message or ""
    assert "\n" not in message and "EMAG_API_URL" in message and wrong in message
    assert message.startswith("fbe: product_offer/count: ")

    for name in ("EMAG_API_URL", "EMAG_MAX_ATTEMPTS", "EMAG_SYNC_DATABASE_URL", "EMAG_SYNC_HOME"):
        monkeypatch.setenv(name, env[name])
    for name, value in sandbox_server.env.items():
        if name != "EMAG_API_URL":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")  # what the command sets itself
    cli = CliRunner().invoke(app, ["sync", "--account", "fbe"])
    assert cli.exit_code == 1 and cli.stderr.strip() == f"sync failed: {message}"

    logs = run_logs(flow_run.id, until=lambda messages: any(message in m for m in messages))
    assert any(message in log.message for log in logs), [log.message for log in logs]
    assert not [log.message for log in logs if "Traceback" in log.message], "\n".join(
        log.message[-900:] for log in logs if "Traceback" in log.message
    )


def task_run_names(flow_run_id) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name for run in runs}


@pytest.mark.flow
def test_a_served_sync_shows_its_retries_and_accounts_and_fails_on_an_error_page_in_one_line(
    serve_deployments, sandbox_server, database_url, tmp_path
) -> None:
    """What an operator sees in the UI for a served deployment: eMAG's 429s answered by retries appear in
    the flow run's logs (they are logged by the client's look-ahead threads), task runs are named by account
    and step; then eMAG answering isError on page 2 ends the run Failed with that one line in its logs and no
    traceback anywhere."""
    from prefect.deployments import run_deployment

    from emag_sandbox.state import Faults
    from emag_sync.accounts import AccountType

    state = sandbox_server.state
    env = served_env(sandbox_server, database_url, tmp_path / "home")
    child = serve_deployments(env, "sync-fbe")
    wait_for_deployment("emag-product-sync/sync-fbe", child)

    state.set_faults(AccountType.FBE, Faults(force_429=2))
    clean = run_deployment("emag-product-sync/sync-fbe", timeout=RUN_TIMEOUT_SECONDS)
    assert clean.state is not None and clean.state.is_completed(), clean.state
    messages = [
        log.message
        for log in run_logs(
            clean.id,
            until=lambda found: any("retry 1/" in m for m in found) and any("committed" in m for m in found),
        )
    ]
    assert any("rate limited (HTTP 429); retry 1/" in m for m in messages), messages
    assert any(m.startswith("fbe: pages 1-") and "committed" in m for m in messages)
    assert {"preflight", "sync-fbe", "data-quality-fbe"} <= task_run_names(clean.id)

    state.set_faults(AccountType.FBE, Faults(error_pages={2}))
    failed = run_deployment("emag-product-sync/sync-fbe", timeout=RUN_TIMEOUT_SECONDS)
    assert failed.state is not None and failed.state.is_failed(), failed.state
    cause = failed.state.message or ""
    assert (
        cause.startswith("fbe: product_offer/read page 2: eMAG answered isError: true") and "\n" not in cause
    )
    logs = run_logs(
        failed.id, until=lambda found: any(m.startswith("Finished in state Failed") for m in found)
    )
    assert any(cause in log.message for log in logs)
    assert not [log.message for log in logs if "Traceback" in log.message or "NoneType: None" in log.message]
