"""The data-quality checkpoint of many accounts: one after another (one GX run each) against one GX run for
all of them: ``python -m benchmarks.dq_many [--accounts 1,10,20] [--records 2550]``.

Each account is loaded like a sync loads it (sandbox records, ``transform_batch``, ``load_batch`` in a
succeeded run) into an embedded PostgreSQL of its own. Great Expectations is imported before any timing;
each measurement starts with an empty Data Docs site. The figures go to stdout as JSON. Not part of the
test suite; ``measure`` is what a benchmark runner can call with a database already loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bench import BATCH_RECORDS, ITEMS_PER_PAGE, PAGES_PER_BATCH, Workspace, machine_facts

DEFAULT_ACCOUNTS = (1, 10, 20)
DEFAULT_RECORDS = 2550


def load_accounts(url: Any, count: int, records: int) -> list[Any]:
    """Register ``count`` FBE accounts ``dq-01``.. and load ``records`` sandbox records into each, in a
    succeeded run; returns the accounts with their run ids."""
    from emag_sandbox.catalogue import Catalogue
    from emag_sync.accounts import AccountType
    from emag_sync.db import make_engine
    from emag_sync.registry import add_account
    from emag_sync.runs import finish_run, start_run
    from tasks.load import load_batch
    from tasks.transform import transform_batch

    engine = make_engine(url)
    loaded = []
    try:
        for number in range(1, count + 1):
            account = add_account(engine, f"dq-{number:02d}", platform="emag-ro", kind="fbe", seller="bench")
            catalogue = Catalogue(AccountType.FBE, records, number)
            run_id = start_run(
                engine,
                account,
                flow_run_id=None,
                items_per_page=ITEMS_PER_PAGE,
                pages_per_batch=PAGES_PER_BATCH,
                expected_items=records,
                expected_pages=-(-records // ITEMS_PER_PAGE),
            )
            for start in range(0, records, BATCH_RECORDS):
                indexes = range(start, min(records, start + BATCH_RECORDS))
                batch = transform_batch(
                    [catalogue.record(i) for i in indexes],
                    account,
                    pages=[i // ITEMS_PER_PAGE + 1 for i in indexes],
                    synced_at=datetime.now(UTC),
                )
                load_batch(engine, run_id, account, batch, last_page=indexes[-1] // ITEMS_PER_PAGE + 1)
            finish_run(engine, run_id, deactivated=0)
            loaded.append((account, run_id))
    finally:
        engine.dispose()
    return loaded


def measure(url: Any, targets: list[Any], scratch: Path) -> dict[str, Any]:
    """Seconds to check ``targets`` (account, run id) one after another, then all in one run; each
    measurement with an empty Data Docs site under ``scratch``."""
    from expectations.checkpoint import _import_gx, run_checkpoint, run_checkpoints

    _import_gx()
    home = Path(tempfile.mkdtemp(dir=scratch))
    began = time.perf_counter()
    sequential = {
        account.name: run_checkpoint(url, account, run_id=run_id, home=home).status
        for account, run_id in targets
    }
    one_after_another = time.perf_counter() - began

    home = Path(tempfile.mkdtemp(dir=scratch))
    began = time.perf_counter()
    together = {name: result.status for name, result in run_checkpoints(url, targets, home=home).items()}
    one_run = time.perf_counter() - began
    assert together == sequential, (together, sequential)
    return {
        "accounts": len(targets),
        "one_after_another_seconds": round(one_after_another, 2),
        "one_run_seconds": round(one_run, 2),
        "speedup": round(one_after_another / one_run, 2),
        "statuses": sorted(set(together.values())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", default=",".join(map(str, DEFAULT_ACCOUNTS)))
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS)
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.accounts.split(","))

    workspace = Workspace()
    url = workspace.fresh_database("dq_many")
    began = time.perf_counter()
    targets = load_accounts(url, sizes[-1], args.records)
    print(
        f"loaded {sizes[-1]} accounts x {args.records} records in {time.perf_counter() - began:.1f} s",
        file=sys.stderr,
    )
    figures = []
    for size in sizes:
        figures.append({"records_per_account": args.records, **measure(url, targets[:size], workspace.dir)})
        print(json.dumps(figures[-1]), file=sys.stderr)
    print(json.dumps({"machine": machine_facts(workspace.postgres_version()), "dq_many": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
