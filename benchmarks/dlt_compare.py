"""emag-sync against a dlt ``rest_api`` pipeline: same sandbox, same records, same PostgreSQL, no rate limit.

dlt is not a dependency of emag-sync: it is installed into a throwaway environment, ``benchmarks/.dlt-venv``
(created on first use, git-ignored, delete it to start afresh). Both sides are whole commands in fresh
processes timed from outside: ``emag-sync sync --account both`` (reads, loads, data-quality checkpoint,
Prefect server up) and ``benchmarks/dlt_pipeline.py`` (reads and merges, checks nothing), in two variants:
dlt's default (nested lists become child tables) and ``--flat`` (nested fields kept as JSON, like ours).
First load into empty tables, then reloads of the unchanged records, the three commands interleaved.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.verified import UNLIMITED_PER_SECOND, _env, _reset, _run, emag_sync_command

if TYPE_CHECKING:
    from benchmarks.bench import Workspace

DLT_REQUIREMENT = "dlt[postgres]>=1.31,<2"
VENV = Path(__file__).resolve().parent / ".dlt-venv"
PIPELINE = Path(__file__).resolve().parent / "dlt_pipeline.py"
RECORDS = {"full": 20_000, "quick": 5_000}
RELOADS = {"full": 3, "quick": 1}
TARGET_FASTER = 1.5  # issue 14: the whole command at least 1.5x faster than dlt
VARIANTS = ("nested", "flat")


def dlt_python(status: Callable[[str], None]) -> Path:
    """The throwaway environment's interpreter, with dlt installed (created and installed when missing)."""
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import dlt, psycopg2"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    status(
        f"dlt: installing {DLT_REQUIREMENT} into {VENV.relative_to(Path.cwd()) if VENV.is_relative_to(Path.cwd()) else VENV}"
    )
    venv.create(VENV, with_pip=True, clear=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", DLT_REQUIREMENT], check=True)
    return python


def _dlt_url(workspace: Workspace, database: str) -> str:
    """A psycopg2 URL for ``database`` on the workspace's server (its Unix socket; trust auth ignores the
    password, which dlt's credentials require)."""
    query = workspace.admin_url.query
    port = query.get("port", "5432")
    return f"postgresql://postgres:unused@localhost:{port}/{database}?host={query['host']}"


def _timed(args: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    began = time.perf_counter()
    with log.open("a") as err:
        done = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                              timeout=1800, check=False)  # fmt: skip
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(args[-3:])} exited {done.returncode}:\n{tail}")
    return round(seconds, 3), done.stdout


def bench_dlt(workspace: Workspace, scale: str, status: Callable[[str], None]) -> dict[str, Any]:
    from benchmarks.bench import prefect_server
    from emag_sandbox.server import serve_in_process

    python = dlt_python(status)
    records, reloads = RECORDS[scale], RELOADS[scale]
    for name in ("bench_dlt_emag", "bench_dlt"):
        workspace.drop_database(name)
    emag_database = workspace.fresh_database("bench_dlt_emag")
    workspace.fresh_database("bench_dlt")  # dlt creates its own schemas in it
    log = workspace.dir / "dlt.log"
    with (
        prefect_server(workspace) as api_url,
        serve_in_process(
            "--no-rate-limit", "--products", str(records), "--main-products", str(records)
        ) as sb,
    ):
        ours = _env(sb.env, workspace.dir / "home-dlt-compare", api_url, workspace.dir / "prefect")
        ours.update(EMAG_SYNC_DATABASE_URL=emag_database.render_as_string(hide_password=False),
                    EMAG_REQUESTS_PER_SECOND=UNLIMITED_PER_SECOND)  # fmt: skip
        _run(emag_sync_command("setup-prefect", "--no-secrets"), ours, log)
        theirs = {**ours, "BENCH_DLT_DATABASE_URL": _dlt_url(workspace, "bench_dlt"),
                  "DLT_PIPELINES_DIR": str(workspace.dir / "dlt-pipelines"),
                  "RUNTIME__DLTHUB_TELEMETRY": "false"}  # fmt: skip

        def emag_sync() -> dict[str, Any]:
            seconds, _ = _timed(emag_sync_command("sync", "--account", "both"), ours, log)
            return {"wall_seconds": seconds}

        def dlt_run(variant: str) -> dict[str, Any]:
            args = [str(python), str(PIPELINE), *(["--flat"] if variant == "flat" else [])]
            seconds, out = _timed(args, theirs, log)
            figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
            if set(figures["rows"].values()) != {records}:
                raise RuntimeError(
                    f"dlt {variant} loaded {figures['rows']}, expected {records:,} per account"
                )
            return {"wall_seconds": seconds, **figures}

        commands: dict[str, Callable[[], dict[str, Any]]] = {
            "emag_sync": emag_sync,
            **{f"dlt_{v}": (lambda v=v: dlt_run(v)) for v in VARIANTS},
        }
        first: dict[str, Any] = {}
        again: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
        for name, command in commands.items():
            status(f"dlt: {records:,} + {records:,}, first load, {name}")
            _reset(sb.control_url)
            first[name] = command()
        for n in range(reloads):
            for name, command in commands.items():
                status(f"dlt: reload {n + 1}/{reloads}, {name}")
                _reset(sb.control_url)
                again[name].append(command())
        version = first["dlt_nested"]["dlt"]
    for name in ("bench_dlt_emag", "bench_dlt"):
        workspace.drop_database(name)

    medians = {
        name: round(statistics.median(r["wall_seconds"] for r in runs), 3) for name, runs in again.items()
    }
    faster = {
        phase: {v: round(figures[f"dlt_{v}"] / figures["emag_sync"], 3) for v in VARIANTS}
        for phase, figures in (
            ("first_load", {k: r["wall_seconds"] for k, r in first.items()}),
            ("reload", medians),
        )
    }
    return {
        "records_per_account": records,
        "dlt_version": version,
        "first_load": first,
        "reloads": again,
        "reload_median_seconds": medians,
        "emag_sync_faster_by": faster,
        "targets": {"faster_than_default_dlt_ok": min(faster[p]["nested"] for p in faster) >= TARGET_FASTER},
    }


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    n = f"{result['records_per_account']:,}"
    rows: list[tuple[str, str, str, str]] = []
    for phase, label in (("first_load", "first load"), ("reload", "reload, median")):
        if phase == "first_load":
            seconds = {k: r["wall_seconds"] for k, r in result["first_load"].items()}
        else:
            seconds = result["reload_median_seconds"]
        faster = result["emag_sync_faster_by"][phase]
        rows.append(
            ("dlt", f"{n} + {n}, {label}: emag-sync sync (with DQ)", f"{seconds['emag_sync']:.2f} s", "")
        )
        for variant, what in (("nested", "dlt rest_api, default nesting"), ("flat", "dlt rest_api, flat")):
            mark = "[green]yes[/green]" if faster[variant] >= TARGET_FASTER else "[red]NO[/red]"
            target = f" (>= {TARGET_FASTER} {mark})" if variant == "nested" else ""
            rows.append(("dlt", f"  {what}", f"{seconds[f'dlt_{variant}']:.2f} s",
                         f"emag-sync {faster[variant]:.2f}x faster{target}"))  # fmt: skip
    return rows


NOTES = (
    "dlt: whole commands in fresh processes, interleaved, the same sandbox (no rate limit) and PostgreSQL "
    "server; dlt reads, normalizes and merges on id and checks nothing; emag-sync also runs the data-quality "
    "checkpoint and reports to the Prefect server. dlt installed in benchmarks/.dlt-venv.",
)


if __name__ == "__main__":
    sys.exit("run through the benchmark: python -m benchmarks.bench --only dlt")
