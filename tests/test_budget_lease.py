"""One login's eMAG budget across processes: the lease (emag_sync.api.lease) against the sandbox with its rate
limit on, in real OS processes sharing one PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from emag_sandbox.state import SandboxState
from emag_sync.db import make_engine
from emag_sync.locks import BUDGET_LOCK_NAMESPACE
from tests.price_helpers import FBE, seed_offers, valid_rows

ROOT = Path(__file__).resolve().parents[1]

# One process: `count` requests of fbe as fast as its budget lets them go, for SECONDS; prints what it sent.
SENDER = """
import json, sys, time
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.api import open_client
from emag_sync.settings import get_settings

seconds = float(sys.argv[1])
with open_client(get_settings(), legacy_account(AccountType.FBE)) as client:
    print("ready", file=sys.stderr, flush=True)
    lease = client._limiter.lease
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        client.count()
    counters = client.stats.counters()
print(json.dumps({"requests": counters.api_requests, "rate_limited": counters.rate_limited,
                  "handovers": lease.handovers}))
"""

# One account's whole sync (the sync task's plain function: no Prefect server to start in each process).
SYNC = """
import sys
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.options import SyncOptions
from tasks.sync_account import sync_account_with_settings

run = sync_account_with_settings(
    legacy_account(AccountType.FBE), SyncOptions(items_per_page=int(sys.argv[1])), None, None
)
print(run.status)
"""


def _env(running, database_url) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "EMAG_"))}
    env.update(running.env)
    env.update(
        EMAG_SYNC_DATABASE_URL=database_url.render_as_string(hide_password=False),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    return env


def _python(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_on_one_account_take_turns_without_a_429(serve_sandbox, database_url) -> None:
    """Two processes spend fbe's budget as fast as their limiters let them: eMAG (the sandbox, 3 in any
    second) refuses none of their requests, and both get requests through (the lease is handed over)."""
    state = SandboxState(products=100, rate_limit=True)
    with serve_sandbox(state) as running:
        env = _env(running, database_url)
        senders = [_python(SENDER, "16", env=env) for _ in range(2)]
        results = []
        for sender in senders:
            out, err = sender.communicate(timeout=180)
            assert sender.returncode == 0, err
            results.append(json.loads(out.splitlines()[-1]))
        logged = [r for r in state.request_log if r.account == FBE.name]
    assert [r for r in logged if r.status_code == 429] == []
    assert [r["rate_limited"] for r in results] == [0, 0]
    # Each had at least one turn of LEASE_TURN_SECONDS at ~3/s; the one that started first handed over.
    assert all(r["requests"] >= 6 for r in results), results
    assert sum(r["handovers"] for r in results) >= 1, results
    assert len(logged) == sum(r["requests"] for r in results)
    # Measured for the report: the combined pace while they take turns.
    span = (logged[-1].at - logged[0].at).total_seconds()
    print(f"two processes: {len(logged)} requests in {span:.1f} s = {len(logged) / span:.2f}/s, 0 429s")


def test_a_price_update_in_another_process_is_not_stuck_behind_a_sync(
    serve_sandbox, database_url, tmp_path
) -> None:
    """fbe's sync reads 120 pages (~45 s at 3/s) in one process; a price update of fbe started in another
    process once the sync reads gets the budget and finishes while the sync still reads, and nothing is
    answered 429."""
    state = SandboxState(products=1200, main_products=10, rate_limit=True)
    engine = make_engine(database_url)
    try:
        seed_offers(engine, state, FBE)  # the offers the price update looks up, as an earlier sync left them
    finally:
        engine.dispose()
    rows = valid_rows(state, FBE, 3)
    prices = tmp_path / "prices.csv"
    prices.write_text("sku,account,price\n" + "".join(f"{sku},fbe,{price}\n" for sku, price in rows))
    with serve_sandbox(state) as running:
        env = _env(running, database_url)
        sync = _python(SYNC, "10", env=env)
        deadline = time.monotonic() + 120
        while not [r for r in state.request_log if r.page] and sync.poll() is None:
            assert time.monotonic() < deadline, "the sync never started reading"
            time.sleep(0.05)
        cli = "from emag_sync.cli.main import run; run()"
        price = _python(cli, "update-price", "--file", str(prices), env=env)
        price_out, price_err = price.communicate(timeout=180)
        sync_still_reading = sync.poll() is None
        sync_out, sync_err = sync.communicate(timeout=240)
        logged = [r for r in state.request_log if r.account == FBE.name]
    assert price.returncode == 0, price_err
    assert "price updates: 3 applied" in price_err + price_out, price_err + price_out
    assert sync.returncode == 0 and sync_out.strip().endswith("succeeded"), sync_err
    assert [r for r in logged if r.status_code == 429] == []
    reads = [r.at for r in logged if r.page]
    [save] = [r.at for r in logged if r.action == "save"]  # one offer/save of the three
    assert reads[0] < save < reads[-1], "the price update was sent after the whole sync"
    assert sync_still_reading, f"the price update ended after the sync ({len(reads)} pages)"
    # (Which of the two logged "waiting for this account's eMAG budget" depends on who took the lease first
    # and on the session's log settings; the order of the requests above is what proves the turns.)


def test_the_budget_key_space_is_apart_from_the_other_locks(engine) -> None:
    """The lease's lock is a two-int4 key (pg_locks objsubid 2, never an offer lock's single bigint) in a
    namespace of its own (not the sync's or the price runs')."""
    from emag_sync.locks import LOCK_NAMESPACE, PRICE_LOCK_NAMESPACE

    assert len({LOCK_NAMESPACE, PRICE_LOCK_NAMESPACE, BUDGET_LOCK_NAMESPACE}) == 3
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:n, 7)"), {"n": BUDGET_LOCK_NAMESPACE})
        row = conn.execute(
            text("SELECT classid::bigint, objid::bigint, objsubid FROM pg_locks WHERE locktype = 'advisory'")
        ).one()
        conn.execute(text("SELECT pg_advisory_unlock_all()"))
    assert tuple(row) == (BUDGET_LOCK_NAMESPACE, 7, 2)


def _budget_locks(engine) -> list[tuple[int, bool]]:
    with engine.connect() as conn:
        return [
            (row.pid, row.granted)
            for row in conn.execute(
                text(
                    "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND classid = :n "
                    "AND objsubid = 2"
                ),
                {"n": BUDGET_LOCK_NAMESPACE},
            )
        ]


def test_one_lease_per_login_in_a_process_taken_on_use_and_handed_back_on_close(
    serve_sandbox, db_env, engine, monkeypatch
) -> None:
    """Two clients of fbe share one lease (one connection); main's login has its own. None is held before the
    first request or after the last client of its login closes."""
    from emag_sync.accounts import AccountType, legacy_account
    from emag_sync.api import open_client
    from emag_sync.settings import get_settings

    with serve_sandbox(SandboxState(products=20, rate_limit=True)) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        settings = get_settings()
        with open_client(settings, FBE) as first, open_client(settings, FBE) as second:
            assert _budget_locks(engine) == []  # opened, nothing sent yet
            first.count()
            second.count()
            assert first._limiter.lease is second._limiter.lease
            assert len(_budget_locks(engine)) == 1
            with open_client(settings, legacy_account(AccountType.MAIN)) as main:
                main.count()
                held = _budget_locks(engine)
            assert len(held) == 2 and len({pid for pid, _ in held}) == 2  # one connection per login
            leases = [first._limiter.lease, main._limiter.lease]
        # Given back a window after the last answer (in the background: closing does not wait for it).
        assert all(lease._released.wait(10) for lease in leases)
        assert _budget_locks(engine) == []


def test_one_process_alone_keeps_90_percent_of_the_rate_through_the_lease(db_env, monkeypatch) -> None:
    """Issue 2's >= 90% of 3/s holds through the lease: a read of 40 pages with the client's look-ahead.

    The sandbox runs in a process of its own, as eMAG is another machine: in this process its clock would
    stamp arrivals late whenever the client's threads (or the rest of a busy test session) hold the GIL,
    and count requests sent a window apart as one burst."""
    from datetime import datetime

    from emag_sandbox.server import serve_in_process
    from emag_sync.api import open_client
    from emag_sync.settings import get_settings

    with serve_in_process("--products", "400") as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        with open_client(get_settings(), FBE) as client:
            pages = list(client.iter_pages(items_per_page=10))
        logged = httpx.get(running.control_url + "/requests", params={"account": "fbe"}).json()
    assert len(pages) == 41  # 40 full pages and the empty one after them
    assert [r for r in logged if r["status_code"] == 429] == []
    reads = sorted(datetime.fromisoformat(r["at"]) for r in logged if r["action"] == "read")
    rate = (len(reads) - 1) / (reads[-1] - reads[0]).total_seconds()
    print(f"one process through the lease: {rate:.2f} requests/s")
    assert rate >= 0.9 * 3
