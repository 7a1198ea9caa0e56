"""Many accounts at once: time to verified data for N accounts, each on its own budget, against the floor.

N = 1, 10, 20, 40 accounts of 2,550 offers each (platforms and kinds mixed), served by one sandbox process
with eMAG's limit on (3 requests/s per account, 300 ms answers), so a 429 is real. Each account has its own
credentials, so its own budget: N accounts could all finish in the time one needs, the request floor. Per N,
a fresh database with the N accounts registered, then two phases: the first load and a reload with nothing
changed. A phase is one ``emag-product-sync`` run of ``accounts="all"`` (what ``emag-sync sync --account all``
runs), from its start until every account is synced and checked (the flow returns after the last check).

A *mode* is how the run is carried out: ``in-process`` calls the flow in one fresh process (the command's
path); a mode is one function taking a :class:`Scenario` (its N, phase, and the environment that points at
the sandbox, the scenario's database and the Prefect server) and returning :class:`Measured`; adding it to
``MODES`` adds its rows to the table. Around it this module resets the sandbox, samples PostgreSQL's
connections and reads the sandbox's request log, so every mode is measured the same way.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import verified

SIZES = {"full": (1, 10, 20, 40), "quick": (1, 4)}
RECORDS = {"full": 2_550, "quick": 500}
PHASES = ("first load", "reload")
LATENCY_SECONDS = 0.3
REQUESTS_PER_SECOND = 3.0
# Accounts spread over platforms and both catalogue shapes, as a seller with shops in three countries.
PLATFORMS = ("emag-ro", "emag-bg", "emag-hu")
KINDS = ("fbe", "main")
TARGET_ACCOUNTS = 20
TARGET_VS_FLOOR = 1.5  # issue 20: 20 accounts reloaded and verified within 1.5x one account's floor
CONNECTION_SAMPLE_SECONDS = 0.2


def account_names(count: int) -> list[str]:
    return [f"acct-{n:02d}" for n in range(1, count + 1)]


def sandbox_options(count: int, records: int) -> list[str]:
    """``emag-sync sandbox`` options: ``count`` accounts of ``records`` each, the limit on, 300 ms answers."""
    options = ["--latency", str(LATENCY_SECONDS), "--requests-per-second", str(REQUESTS_PER_SECOND)]
    for n, name in enumerate(account_names(count)):
        options += ["--account", f"{name}:{PLATFORMS[n % len(PLATFORMS)]}:{KINDS[n % len(KINDS)]}:{records}"]
    return options


@dataclass(frozen=True)
class Scenario:
    """One phase of one N: what a mode needs to run it."""

    mode: str
    accounts: int
    records_per_account: int
    phase: str
    env: Mapping[str, str]  # the sandbox's credentials, EMAG_SYNC_DATABASE_URL, PREFECT_API_URL, homes
    workdir: Path  # for logs


@dataclass(frozen=True)
class Measured:
    """What a mode measures itself: its own processes' time, CPU and memory, and the run history's figures."""

    wall_seconds: float  # start until every account is synced and checked
    cpu_seconds: float  # every process that ran the sync (user + system)
    peak_rss_mb: float  # the largest of those processes
    records: int  # records read, all accounts
    rate_limited: int  # 429s in the run history
    verified: int  # accounts synced with a data-quality verdict
    started_epoch: float  # when the run started and ended (time.time()), to split it by the request log
    ended_epoch: float
    failed: str | None = None  # the run's failure message, if any


Mode = Callable[[Scenario], Measured]


# --- in-process: the flow in one fresh process ------------------------------------------------------------


def run_in_process(scenario: Scenario) -> Measured:
    """``emag_product_sync(accounts="all")`` in a fresh process (child of ``python -m benchmarks.bench``)."""
    from benchmarks.bench import run_child

    label = re.sub(r"[^a-z0-9]+", "-", f"accounts {scenario.mode} {scenario.accounts} {scenario.phase}")
    figures = run_child(["--accounts-one"], dict(scenario.env), scenario.workdir / f"{label}.log")
    return Measured(**figures)


def in_process_child() -> dict[str, Any]:
    """In this (fresh) process: the flow over every registered account, timed; CPU of all its threads."""
    from prefect.settings import temporary_settings

    import flows.sync as sync_flow
    from benchmarks.bench import _peak_rss_mb

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        cpu, started_epoch = time.process_time(), time.time()
        began = time.perf_counter()
        state = sync_flow.emag_product_sync(accounts="all", return_state=True)
        wall = time.perf_counter() - began
        cpu, ended_epoch = time.process_time() - cpu, time.time()
    failed = None if state.is_completed() else (state.message or state.name)
    runs = state.result(raise_on_failure=False) if state.is_completed() else []
    runs = _checked(runs if isinstance(runs, list) else [])
    return asdict(
        Measured(
            wall_seconds=round(wall, 3),
            cpu_seconds=round(cpu, 3),
            peak_rss_mb=_peak_rss_mb(),
            records=sum(run.records_read for run in runs),
            rate_limited=sum(run.rate_limited for run in runs),
            verified=sum(1 for run in runs if run.dq_status is not None),
            started_epoch=started_epoch,
            ended_epoch=ended_epoch,
            failed=failed,
        )
    )


def _checked(runs: Sequence[Any]) -> list[Any]:
    """The runs as the history has them now, with the data-quality verdict the flow recorded after them."""
    from emag_sync.db import database_url, make_engine
    from emag_sync.runs import get_run
    from emag_sync.settings import get_settings

    engine = make_engine(database_url(get_settings()))
    try:
        return [get_run(engine, run.id) for run in runs]
    finally:
        engine.dispose()


# --- on a process work pool: sync-all, its children on two workers ---------------------------------------

POOL_WORKERS = ("bench-worker-a", "bench-worker-b")
POOL_TIMEOUT_SECONDS = 1800.0


def run_on_pool(scenario: Scenario) -> Measured:
    """``sync-all`` deployed to a process pool served by two workers (started before the clock), from the
    parent's creation until it is final: process starts, the children's syncs and checks, the summary.
    CPU and peak RSS are the workers' and everything they started (the flow runs)."""
    from benchmarks.pool import process_pool, start_sync_all, wait_final

    label = re.sub(r"[^a-z0-9]+", "-", f"pool {scenario.accounts} {scenario.phase}")
    with process_pool(scenario.env, scenario.workdir / label, workers=POOL_WORKERS, limit=100):
        from benchmarks.pool import worker_pids

        pids = worker_pids(POOL_WORKERS)
        cpu_before = sum(process_tree_cpu_seconds(pid) or 0.0 for pid in pids)
        with PeakRss(pids) as rss:
            started_epoch, began = time.time(), time.perf_counter()
            parent = start_sync_all({"accounts": "all"})
            ended = wait_final(parent.id, POOL_TIMEOUT_SECONDS)
            wall, ended_epoch = time.perf_counter() - began, time.time()
        cpu = sum(process_tree_cpu_seconds(pid) or 0.0 for pid in pids) - cpu_before
    state = ended.state
    runs = _runs_since(scenario.env, started_epoch)
    return Measured(
        wall_seconds=round(wall, 3),
        cpu_seconds=round(cpu, 3),
        peak_rss_mb=rss.peak_mb,
        records=sum(run.records_read for run in runs),
        rate_limited=sum(run.rate_limited for run in runs),
        verified=sum(1 for run in runs if run.dq_status is not None),
        started_epoch=started_epoch,
        ended_epoch=ended_epoch,
        failed=None
        if state is not None and state.is_completed()
        else (state.message if state else "no state"),
    )


def _runs_since(env: Mapping[str, str], epoch: float) -> list[Any]:
    """The runs the scenario made (started after ``epoch``), as the history has them now."""
    from sqlalchemy import create_engine

    from emag_sync.runs import recent_runs

    engine = create_engine(env["EMAG_SYNC_DATABASE_URL"])
    try:
        return [run for run in recent_runs(engine, limit=1000) if run.started_at.timestamp() >= epoch]
    finally:
        engine.dispose()


class PeakRss:
    """The largest resident set (VmHWM) among ``pids``' descendants, sampled while the block runs."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = set(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak_mb = 0.0

    def _sample(self) -> None:
        while not self._stop.wait(CONNECTION_SAMPLE_SECONDS):
            for pid in _descendants(self._pids):
                with suppress(OSError, ValueError):
                    status = Path(f"/proc/{pid}/status").read_text()
                    for line in status.splitlines():
                        if line.startswith("VmHWM:"):  # a kernel thread has none
                            self.peak_mb = max(self.peak_mb, round(int(line.split()[1]) / 1024, 1))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _descendants(roots: set[int]) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), set(roots)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


POOL = "pool (2 workers)"
MODES: dict[str, Mode] = {"in-process": run_in_process, POOL: run_on_pool}


# --- around every mode: database connections, PostgreSQL's CPU, the sandbox's log -------------------------


class ConnectionSampler:
    """The most client connections to one database seen in pg_stat_activity, sampled every 0.2 s."""

    def __init__(self, admin_url: Any, database: str) -> None:
        from sqlalchemy import create_engine

        self._engine = create_engine(admin_url, pool_size=1)
        self._database = database
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pg-connections", daemon=True)

    def _sample(self) -> None:
        from sqlalchemy import text

        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND backend_type = 'client backend'"
        )
        with self._engine.connect() as conn:
            while not self._stop.is_set():
                self.peak = max(self.peak, int(conn.execute(query, {"db": self._database}).scalar_one()))
                conn.rollback()  # a fresh snapshot of pg_stat_activity each time
                self._stop.wait(CONNECTION_SAMPLE_SECONDS)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._engine.dispose()


def _ticks(stat: str, *fields: int) -> int:
    # /proc/PID/stat: the fields after the command's closing parenthesis, numbered as in proc(5) from 3
    after = stat.rsplit(")", 1)[1].split()
    return sum(int(after[n - 3]) for n in fields)


def process_tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of ``pid``'s children, live (utime + stime) and ended (its cutime + cstime): for the
    postmaster, every backend's work. None when the process cannot be read."""
    if pid is None:
        return None
    try:
        total = _ticks(Path(f"/proc/{pid}/stat").read_text(), 16, 17)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, the parent
                total += _ticks(stat, 14, 15)
    except OSError:
        return None
    return total / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    try:
        return _ticks(Path(f"/proc/{pid}/stat").read_text(), 14, 15) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def postmaster_pid(admin_url: Any) -> int | None:
    """The PostgreSQL server's pid (pg_postmaster's, from its data directory), None if not on this machine."""
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url)
    try:
        with engine.connect() as conn:
            data_directory = conn.scalar(text("SHOW data_directory"))
    finally:
        engine.dispose()
    try:
        return int((Path(str(data_directory)) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def measure(
    mode: Mode, scenario: Scenario, *, admin_url: Any, database: str, control_url: str, sandbox_pid: int
) -> dict[str, Any]:
    """One scenario through ``mode``, with the figures every mode shares."""
    verified._reset(control_url)  # empty request log and rate history; catalogues as generated
    postmaster = postmaster_pid(admin_url)
    db_cpu, sandbox_cpu = process_tree_cpu_seconds(postmaster), process_cpu_seconds(sandbox_pid)
    with ConnectionSampler(admin_url, database) as connections:
        measured = mode(scenario)
    db_cpu_after, sandbox_cpu_after = process_tree_cpu_seconds(postmaster), process_cpu_seconds(sandbox_pid)
    log = verified._sandbox_log(control_url)
    per_account: dict[str, int] = {}
    for request in log:  # a 429 was not served: its retry is the request the account needed
        if request["account"] is not None and request["status_code"] != 429:
            per_account[request["account"]] = per_account.get(request["account"], 0) + 1
    needed = max(per_account.values(), default=0)
    sent = sorted(
        datetime.fromisoformat(r["at"]).timestamp() - LATENCY_SECONDS for r in log
    )  # logged when answered
    floor = needed / REQUESTS_PER_SECOND
    thousands = max(measured.records, 1) / 1000
    figures: dict[str, Any] = {
        "accounts": scenario.accounts,
        "phase": scenario.phase,
        **asdict(measured),
        "requests": len(log),
        "requests_one_account": needed,
        "floor_seconds": round(floor, 3),
        "ratio_to_floor": round(measured.wall_seconds / floor, 3) if floor else None,
        "cpu_seconds_per_1000": round(measured.cpu_seconds / thousands, 3),
        "peak_db_connections": connections.peak,
        "received_429_sandbox_log": sum(1 for r in log if r["status_code"] == 429),
    }
    if sent:  # where the time went: before the first request, the reads, after the last answer
        figures["start_to_first_request"] = round(sent[0] - measured.started_epoch, 3)
        figures["first_to_last_answer"] = round(sent[-1] + LATENCY_SECONDS - sent[0], 3)
        figures["last_answer_to_end"] = round(measured.ended_epoch - sent[-1] - LATENCY_SECONDS, 3)
    if db_cpu is not None and db_cpu_after is not None:
        figures["db_cpu_seconds_per_1000"] = round((db_cpu_after - db_cpu) / thousands, 3)
    if sandbox_cpu is not None and sandbox_cpu_after is not None:
        figures["sandbox_cpu_seconds"] = round(sandbox_cpu_after - sandbox_cpu, 3)
    return figures


def register(database_url: Any, count: int) -> None:
    """The first ``count`` sandbox accounts registered; main and fbe of an older install removed."""
    from emag_sync.db import make_engine
    from emag_sync.registry import add_account, get_account, remove_account

    engine = make_engine(database_url)
    try:
        for legacy in ("main", "fbe"):
            if get_account(engine, legacy) is not None:
                remove_account(engine, legacy, keep_data=False)
        for n, name in enumerate(account_names(count)):
            add_account(engine, name, platform=PLATFORMS[n % len(PLATFORMS)], kind=KINDS[n % len(KINDS)])
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Context:
    """Where the scenarios run: a PostgreSQL server, a Prefect API and a working directory."""

    fresh_database: Callable[[str], Any]  # name -> URL of an empty database with the schema
    admin_url: Any
    api_url: str
    workdir: Path
    base_env: Mapping[str, str]


def run_accounts(
    context: Context,
    sizes: Sequence[int],
    records: int,
    status: Callable[[str], None],
    modes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every mode (default: all of MODES) x N x phase against one sandbox of max(sizes) accounts; the
    figures and the verdict."""
    from emag_sandbox.server import serve_in_process

    rows: list[dict[str, Any]] = []
    with serve_in_process(*sandbox_options(max(sizes), records)) as sb:
        for mode in modes or list(MODES):
            for count in sizes:
                name = f"bench_accounts_{count}_{re.sub(r'[^a-z0-9]+', '_', mode)}"
                url = context.fresh_database(name)
                register(url, count)  # their credentials and URLs: the sandbox's env
                env = {
                    **context.base_env,
                    **{k: v for k, v in sb.env.items() if k != "EMAG_SANDBOX_URL"},
                    "EMAG_SYNC_DATABASE_URL": url.render_as_string(hide_password=False),
                    "EMAG_SYNC_HOME": str(context.workdir / f"home-{name}"),
                    "PREFECT_API_URL": context.api_url,
                }
                for phase in PHASES:
                    status(f"accounts: {mode}, {count} x {records:,} records, {phase}")
                    scenario = Scenario(mode, count, records, phase, env, context.workdir)
                    figures = measure(MODES[mode], scenario, admin_url=context.admin_url,
                                      database=url.database, control_url=sb.control_url,
                                      sandbox_pid=sb.process.pid)  # fmt: skip
                    rows.append({"mode": mode, **figures, "ran_at": datetime.now(UTC).isoformat(
                        timespec="seconds"), "load_average_1min": round(os.getloadavg()[0], 2)})  # fmt: skip
    return {"records_per_account": records, "sizes": list(sizes), "rows": rows, **verdict(rows)}


def merge(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A run of some modes replaces those modes' rows in results.json and keeps the other modes' rows."""
    modes = {row["mode"] for row in new["rows"]}
    kept = [row for row in (previous or {}).get("rows", []) if row["mode"] not in modes]
    rows = kept + list(new["rows"])
    return {**new, "rows": rows, **verdict(rows)}


def holds(row: Mapping[str, Any]) -> bool:
    """Every account verified within 1.5x the floor, and no 429 anywhere."""
    return (
        row["failed"] is None
        and row["verified"] == row["accounts"]
        and row["ratio_to_floor"] is not None
        and row["ratio_to_floor"] <= TARGET_VS_FLOOR
        and row["received_429_sandbox_log"] == 0
        and row["rate_limited"] == 0
    )


def verdict(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per mode, the largest N whose reload holds the target (and every smaller N's too); the target at 20."""
    largest: dict[str, int | None] = {}
    for mode in dict.fromkeys(row["mode"] for row in rows):
        reloads = sorted((r for r in rows if r["mode"] == mode and r["phase"] == "reload"),
                         key=lambda r: r["accounts"])  # fmt: skip
        best = None
        for row in reloads:
            if not holds(row):
                break
            best = row["accounts"]
        largest[mode] = best
    at_target = [r for r in rows if r["phase"] == "reload" and r["accounts"] == TARGET_ACCOUNTS]
    return {
        "largest_accounts_holding_target": largest,
        "targets": {f"{TARGET_ACCOUNTS}_accounts_reload_ok": {r["mode"]: holds(r) for r in at_target}},
    }


def render(results: Mapping[str, Any], console: Any) -> None:
    """The table: one row per mode, N and phase."""
    from rich.console import Console
    from rich.table import Table

    if not console.is_terminal:  # piped or redirected: wide enough for this table's columns
        console = Console(width=190)

    table = Table(
        title=f"accounts: N x {results['records_per_account']:,} offers, 3 req/s each, to verified data"
    )
    columns = ("mode", "N", "phase", "wall s", "floor s", "x floor", "before / reads / after s",
               "CPU s/1k rec", "DB CPU s/1k", "peak RSS MB", "peak DB conns", "429s", "verified")  # fmt: skip
    for n, column in enumerate(columns):
        table.add_column(column, justify="left" if n in (0, 2) else "right")
    for row in results["rows"]:
        ratio = "" if row["ratio_to_floor"] is None else f"{row['ratio_to_floor']:.2f}"
        mark = "[green]ok[/green]" if holds(row) else "[red]over[/red]"
        db_cpu = row.get("db_cpu_seconds_per_1000")
        split = " / ".join(
            f"{row[key]:.1f}" if key in row else "-"
            for key in ("start_to_first_request", "first_to_last_answer", "last_answer_to_end")
        )
        table.add_row(
            row["mode"], str(row["accounts"]), row["phase"], f"{row['wall_seconds']:.1f}",
            f"{row['floor_seconds']:.1f}", f"{ratio} {mark}", split, f"{row['cpu_seconds_per_1000']:.2f}",
            "" if db_cpu is None else f"{db_cpu:.2f}", f"{row['peak_rss_mb']:.0f}",
            str(row["peak_db_connections"]), f"{row['received_429_sandbox_log']} / {row['rate_limited']}",
            f"{row['verified']}/{row['accounts']}" + (" failed" if row["failed"] else ""),
        )  # fmt: skip
    console.print(table)
    for mode, largest in results["largest_accounts_holding_target"].items():
        console.print(
            f"{mode}: largest N reloaded and verified within {TARGET_VS_FLOOR}x the floor with no 429: "
            f"{largest if largest is not None else 'none'}"
        )
    for note in NOTES:
        console.print(f"- {note}", style="dim")


NOTES = (
    "accounts: one sandbox process serves every account (3 req/s each, own credentials, 300 ms answers); "
    "a fresh database per N; wall = the flow call, start until every account is synced and checked "
    "(process start and imports not included); floor = the most requests one account needed in that "
    "phase / 3 per s, 429s not counted (the accounts run concurrently, each on its own budget).",
    "accounts: before / reads / after = run start to the first eMAG request, first to last answer, last "
    "answer to the run's end (the checks still running after the reads).",
    "accounts: CPU = the sync process(es), all threads; DB CPU = PostgreSQL's backends (postmaster's "
    "children); 429s = sandbox log / run history; peak DB conns = pg_stat_activity sampled every 0.2 s.",
)


def table_rows(results: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """Summary rows for the main table (the detail is the accounts table)."""
    rows = []
    for mode, ok in results["targets"][f"{TARGET_ACCOUNTS}_accounts_reload_ok"].items():
        mark = "[green]yes[/green]" if ok else "[red]NO[/red]"
        rows.append(("accounts", f"{mode}: {TARGET_ACCOUNTS} accounts reloaded, <= {TARGET_VS_FLOOR}x floor, "
                     "0 429s", "", mark))  # fmt: skip
    for mode, largest in results["largest_accounts_holding_target"].items():
        rows.append(("accounts", f"{mode}: largest N holding it", str(largest or "none"), ""))
    return rows
