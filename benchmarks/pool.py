"""A Prefect server and a process work pool as an operator sets them up: the server on PostgreSQL, prefect.yaml's
sync deployments deployed with `prefect deploy` and N workers started with `prefect worker start`; shared by the
tests (the session's Prefect server, the sync-all test) and the accounts benchmark."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POOL = "emag-sync-pool"  # prefect.yaml's
SYNC_ALL = "emag-sync-all/sync-all"
DEPLOYMENTS = ("sync-all", "sync-accounts")
# Workers ask the server for runs every second (the default 10 s would dominate a short benchmark).
WORKER_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}
STOP_SECONDS = 30


@contextmanager
def prefect_server(
    database_url: Any, env: Mapping[str, str], log: Path, *, timeout: float = 180
) -> Iterator[str]:
    """`prefect server start` on the PostgreSQL database ``database_url`` (a SQLAlchemy URL; created if
    missing), with ``env``; yields its API URL and stops it on exit.

    PostgreSQL, as Prefect is run for concurrent work: its SQLite server answers 503 while one writer holds
    the database, and several workers, their flow runs and their artifacts keep it busy.
    """
    import socket

    import httpx
    from sqlalchemy import create_engine, text

    admin = create_engine(database_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database_url.database}
        ):
            conn.execute(text(f'CREATE DATABASE "{database_url.database}"'))
    admin.dispose()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api_url = f"http://127.0.0.1:{port}/api"
    server_env = {
        **env,
        "PREFECT_API_URL": api_url,  # its own address, as the server is told it when it runs alone
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url.set(
            drivername="postgresql+asyncpg"
        ).render_as_string(hide_password=False),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as out:
        server = subprocess.Popen(command, env=server_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"the Prefect server exited {server.returncode}:\n{tail}")
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Prefect server did not answer within {timeout:.0f} s (log: {log})")
            time.sleep(0.5)
        yield api_url
    finally:
        server.terminate()
        try:
            server.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()


def prefect(env: Mapping[str, str], *args: str, timeout: float = 180) -> str:
    """One `prefect` command in the project directory; its output, or RuntimeError with it."""
    command = [sys.executable, "-m", "prefect", *args]
    done = subprocess.run(command, env=dict(env), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} exited {done.returncode}: {done.stdout}\n{done.stderr}")
    return done.stdout


@contextmanager
def process_pool(
    env: Mapping[str, str], logs: Path, *, workers: Sequence[str] = ("worker-a", "worker-b"), limit: int = 2
) -> Iterator[None]:
    """The pool, the sync deployments and ``workers`` (each running at most ``limit`` flow runs at once)
    with ``env``; the workers are stopped on exit."""
    env = {**env, **WORKER_ENV}
    prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect(env, "--no-prompt", "deploy", *(f"--name={name}" for name in DEPLOYMENTS))
    logs.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name in workers:
            command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name", name,
                       "--limit", str(limit)]  # fmt: skip
            with (logs / f"{name}.log").open("ab") as out:
                started.append(
                    subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
                )
        yield
    finally:
        for child in started:
            child.terminate()
        for child in started:
            try:
                child.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()


def start_sync_all(parameters: Mapping[str, Any]) -> Any:
    """A flow run of ``sync-all`` (not waited for)."""
    from prefect.deployments import run_deployment

    return run_deployment(SYNC_ALL, parameters=dict(parameters), timeout=0, as_subflow=False)


def wait_final(flow_run_id: Any, timeout: float, poll: float = 0.5) -> Any:
    """The flow run once it is final (a Retry's AwaitingRetry is not the end); TimeoutError otherwise."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final() and run.state.name != "AwaitingRetry":
                return run
            time.sleep(poll)
    raise TimeoutError(f"flow run {flow_run_id} did not finish within {timeout:.0f} s")


def children_of(parent_id: Any) -> list[Any]:
    """The flow runs a parent started (its subflows)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )


def worker_of_each_run(flow_run_ids: Sequence[str]) -> dict[str, str]:
    """Which worker submitted each flow run, from the events the workers sent the server."""
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


def worker_pids(names: Sequence[str]) -> list[int]:
    """The process ids of the running ``prefect worker start --name NAME`` processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in argv and b"--name" in argv:
            name = argv[argv.index(b"--name") + 1].decode()
            if name in names:
                found.append(int(entry.name))
    return found
