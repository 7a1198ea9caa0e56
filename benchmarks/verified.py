"""Time to verified data: the whole ``emag-sync sync --account both`` command and the whole deployment run.

What an operator waits for is not the reads but the run's end with its data-quality verdict. Each run here
is the console script in a fresh process, exactly as a user types it, against a Prefect server already up
and set up (``emag-sync setup-prefect``), the sandbox in its own process and the default embedded
PostgreSQL in the run's home. Every run is timed from outside (process start to exit) and split with the
sandbox's request log: start -> first eMAG request, first -> last request, last request -> exit.

- at eMAG's limit (3 requests/s per account, 2,550 + 2,550 records): against the request floor, the
  count request + 26 pages per account at 3/s = 9.0 s; also with the embedded server kept running
  (``emag-sync db start``) and as a served deployment (``emag-sync serve``, ``run_deployment``);
- without a rate limit (20,000 + 20,000 records): first load and reload.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.bench import Workspace

LIMIT_RECORDS = 2_550
NO_LIMIT_RECORDS = {"full": 20_000, "quick": 5_000}
TIMED_RUNS = {"full": 3, "quick": 1}
REQUESTS_PER_SECOND = 3.0
UNLIMITED_PER_SECOND = "1000000"
TARGET_VS_FLOOR = 1.25  # issue 14
COMMAND_TIMEOUT_SECONDS = 600
# `emag-sync serve` asks the server for due runs this often; 1 s so a triggered run starts at once.
RUNNER_POLL_SECONDS = "1"


def emag_sync_command(*args: str) -> list[str]:
    """The console script next to this interpreter (as a user runs it), else its entry point via -c."""
    script = Path(sys.executable).with_name("emag-sync")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from emag_sync.cli.main import run; run()", *args]


def _env(sandbox_env: dict[str, str], home: Path, api_url: str, prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAG_", "PREFECT_"))}
    env.update({k: v for k, v in sandbox_env.items() if k != "EMAG_SANDBOX_URL"})
    env.update(
        EMAG_SYNC_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_HOME=str(prefect_home),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GX_ANALYTICS_ENABLED="false",
    )
    return env


def _run(args: Sequence[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=COMMAND_TIMEOUT_SECONDS, check=False)  # fmt: skip
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(args[-3:])} exited {done.returncode}:\n{tail}")


def _sandbox_log(control_url: str) -> list[dict[str, Any]]:
    import httpx

    log: list[dict[str, Any]] = httpx.get(control_url + "/requests", timeout=30).json()
    return log


def _reset(control_url: str) -> None:
    """The sandbox back to its generated catalogues (unchanged records), request log and rate history empty."""
    import httpx

    httpx.post(control_url + "/reset", timeout=30).raise_for_status()


def _latest_flow_run() -> dict[str, Any]:
    """The newest flow run's state and server-side times (start to end), from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
    assert run.start_time is not None and run.end_time is not None, run.state_name
    return {
        "flow_run": str(run.id),
        "state": run.state_name,
        "created": run.created.timestamp() if run.created else None,
        "started": run.start_time.timestamp(),
        "ended": run.end_time.timestamp(),
    }


def _split(started: float, ended: float, log: Sequence[dict[str, Any]]) -> dict[str, Any]:
    sent = [datetime.fromisoformat(r["at"]).timestamp() for r in log]
    return {
        "wall_seconds": round(ended - started, 3),
        "start_to_first_request": round(min(sent) - started, 3),
        "first_to_last_request": round(max(sent) - min(sent), 3),
        "last_request_to_exit": round(ended - max(sent), 3),
        "requests": len(log),
        "received_429": sum(1 for r in log if r["status_code"] == 429),
    }


def timed_command(env: dict[str, str], control_url: str, log: Path) -> dict[str, Any]:
    """One ``emag-sync sync --account both`` from process start to exit, split by the sandbox's log."""
    _reset(control_url)
    started = time.time()
    _run(emag_sync_command("sync", "--account", "both"), env, log)
    ended = time.time()
    figures = _split(started, ended, _sandbox_log(control_url))
    flow = _latest_flow_run()
    figures.update(flow_run_seconds=round(flow["ended"] - flow["started"], 3), state=flow["state"])
    return figures


def timed_deployment(control_url: str, timeout: float) -> dict[str, Any]:
    """One run of the served ``sync-both`` deployment from its creation (as the UI's Run button makes it) to its
    end; created -> started is the runner's pick-up and process start, started -> ended the flow run."""
    from prefect.deployments import run_deployment

    _reset(control_url)
    created = time.time()
    run = run_deployment("emag-product-sync/sync-both", timeout=timeout)
    assert run.state is not None and run.state.is_completed(), run.state
    assert run.start_time is not None and run.end_time is not None
    started, ended = run.start_time.timestamp(), run.end_time.timestamp()
    figures = _split(created, ended, _sandbox_log(control_url))
    figures.update(pick_up_seconds=round(started - created, 3), flow_run_seconds=round(ended - started, 3),
                   state=run.state.name)  # fmt: skip
    return figures


def _summary(runs: Sequence[dict[str, Any]], floor: float | None = None) -> dict[str, Any]:
    walls = [r["wall_seconds"] for r in runs]
    summary = {
        "runs": list(runs),
        "median_wall_seconds": round(statistics.median(walls), 3),
        "best_wall_seconds": round(min(walls), 3),
        "received_429": sum(r["received_429"] for r in runs),
    }
    if floor is not None:
        summary["median_ratio_to_floor"] = round(statistics.median(walls) / floor, 3)
    return summary


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``emag-sync serve sync-both`` in its own process, once its deployment is registered."""
    from prefect.client.orchestration import get_client

    out = log.open("ab")
    child = subprocess.Popen(emag_sync_command("serve", "sync-both"), env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"emag-sync serve exited {child.returncode}; see {log}")
            try:
                client.read_deployment_by_name("emag-product-sync/sync-both")
                time.sleep(2)  # registered; its runner polls next
                return child
            except Exception:  # not registered yet
                time.sleep(0.5)
    child.kill()
    raise RuntimeError("emag-sync serve did not register sync-both within 120 s")


def bench_verified(workspace: Workspace, scale: str, status: Callable[[str], None]) -> dict[str, Any]:
    """At the limit: command, command with the database kept running, deployment; then without a limit."""
    from benchmarks.bench import prefect_server
    from emag_sandbox.server import serve_in_process

    repeats = TIMED_RUNS[scale]
    pages = -(-LIMIT_RECORDS // 100)
    floor = (pages + 1) / REQUESTS_PER_SECOND
    result: dict[str, Any] = {"records_per_account": LIMIT_RECORDS, "floor_seconds": round(floor, 3),
                              "floor_definition": "(count request + pages) / 3 per s, accounts concurrently"}  # fmt: skip
    prefect_home = workspace.dir / "prefect"
    with prefect_server(workspace) as api_url:
        size = str(LIMIT_RECORDS)
        with serve_in_process("--products", size, "--main-products", size) as sb:
            control = sb.control_url
            env = _env(sb.env, workspace.dir / "home-verified", api_url, prefect_home)
            log = workspace.dir / "verified.log"
            _run(emag_sync_command("setup-prefect", "--no-secrets"), env, log)
            status(f"verified: {LIMIT_RECORDS:,} + {LIMIT_RECORDS:,} at 3 req/s, first load (not timed)")
            _run(emag_sync_command("sync", "--account", "both"), env, log)
            runs = []
            for n in range(repeats):
                status(f"verified: command at the limit, run {n + 1}/{repeats}")
                runs.append(timed_command(env, control, log))
            result["command"] = _summary(runs, floor)

            _run(emag_sync_command("db", "start"), env, log)
            try:
                runs = []
                for n in range(repeats):
                    status(f"verified: command, embedded PostgreSQL kept running, run {n + 1}/{repeats}")
                    runs.append(timed_command(env, control, log))
                result["command_db_running"] = _summary(runs, floor)
            finally:
                _run(emag_sync_command("db", "stop"), env, log)

            served_env = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": RUNNER_POLL_SECONDS}
            child = _serve(served_env, workspace.dir / "verified-serve.log")
            try:
                runs = []
                for n in range(repeats):
                    status(f"verified: served deployment sync-both, run {n + 1}/{repeats}")
                    runs.append(timed_deployment(control, timeout=COMMAND_TIMEOUT_SECONDS))
                result["deployment"] = _summary(runs, floor)
            finally:
                child.terminate()
                child.wait(30)

        records = NO_LIMIT_RECORDS[scale]
        status(f"verified: {records:,} + {records:,} without a rate limit")
        with serve_in_process(
            "--no-rate-limit", "--products", str(records), "--main-products", str(records)
        ) as sb:
            env = _env(sb.env, workspace.dir / "home-unlimited", api_url, prefect_home)
            env["EMAG_REQUESTS_PER_SECOND"] = UNLIMITED_PER_SECOND  # the per-minute budget follows (60x)
            log = workspace.dir / "verified-unlimited.log"
            _run(emag_sync_command("setup-prefect", "--no-secrets"), env, log)  # the GCL follows too
            first = timed_command(env, sb.control_url, log)
            reloads = [timed_command(env, sb.control_url, log) for _ in range(repeats)]
        result["no_limit"] = {
            "records_per_account": records,
            "first_load": first,
            "reload": _summary(reloads),
        }
    command = result["command"]
    result["targets"] = {
        "command_vs_floor_ok": command["median_ratio_to_floor"] <= TARGET_VS_FLOOR,
        "zero_429_ok": sum(result[k]["received_429"] for k in ("command", "command_db_running", "deployment"))
        == 0,
    }
    return result


def table_rows(verified: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    n = f"{verified['records_per_account']:,}"
    rows = [
        ("verified", f"{n} + {n} at 3 req/s: request floor", f"{verified['floor_seconds']:.2f} s", "1.00")
    ]
    ok = "[green]yes[/green]" if verified["targets"]["command_vs_floor_ok"] else "[red]NO[/red]"
    for key, label in (("command", "sync --account both, start to exit"),
                       ("command_db_running", "same, embedded PostgreSQL kept running (db start)"),
                       ("deployment", "served deployment, created to end")):  # fmt: skip
        part = verified[key]
        runs = part["runs"]
        target = f" (<= {TARGET_VS_FLOOR} {ok})" if key == "command" else ""
        rows.append(("verified", f"{label}, median of {len(runs)}", f"{part['median_wall_seconds']:.2f} s",
                     f"{part['median_ratio_to_floor']:.2f}{target}"))  # fmt: skip
        split = " / ".join(
            f"{statistics.median(r[k] for r in runs):.2f}"
            for k in ("start_to_first_request", "first_to_last_request", "last_request_to_exit")
        )
        rows.append(("verified", "  start->first request / reads / last request->exit", f"{split} s", ""))
    deployment = verified["deployment"]["runs"]
    rows.append(("verified", "  deployment: created -> flow run started (runner pick-up)",
                 f"{statistics.median(r['pick_up_seconds'] for r in deployment):.2f} s", ""))  # fmt: skip
    rows.append(("verified", "429s received (all runs at the limit)",
                 str(sum(verified[k]["received_429"] for k in ("command", "command_db_running", "deployment"))),
                 "[green]yes[/green]" if verified["targets"]["zero_429_ok"] else "[red]NO[/red]"))  # fmt: skip
    unlimited = verified["no_limit"]
    m = f"{unlimited['records_per_account']:,}"
    rows.append(("verified", f"{m} + {m}, no rate limit: first load, start to exit",
                 f"{unlimited['first_load']['wall_seconds']:.2f} s", ""))  # fmt: skip
    rows.append(("verified", f"{m} + {m}, no rate limit: reload, median",
                 f"{unlimited['reload']['median_wall_seconds']:.2f} s", ""))  # fmt: skip
    return rows


NOTES = (
    "verified: the console script in a fresh process per run, Prefect server up and set up "
    "(setup-prefect: the GCL paces each account), default embedded PostgreSQL started by the run unless "
    "kept running; split by the sandbox's request log (times when answered). Deployment: emag-sync serve "
    f"polling every {RUNNER_POLL_SECONDS} s; its pick-up is reported apart from the flow run.",
)
