"""``emag-sync demo``: sandbox + embedded PostgreSQL + the flow + the data-quality report, no set-up."""

from __future__ import annotations

import os
import shlex

from emag_sync.cli.console import console, incident_queries_table
from emag_sync.cli.sync import SyncOutcome, run_sync
from emag_sync.db import engine_from_settings
from emag_sync.options import SyncOptions
from emag_sync.settings import DEFAULT_DATA_DOCS_URL, get_settings

# The demo's sandbox data never mixes with a real sync's: its own embedded PostgreSQL and reports live in
# this folder under EMAG_SYNC_HOME, even when EMAG_SYNC_DATABASE_URL or EMAG_SYNC_DATA_DOCS_DIR is set; its
# report links are what `emag-sync docs` serves for that folder.
DEMO_HOME = "demo"


def run_demo(*, products: int = 2550, seed: int = 7, rate_limit: bool = True) -> SyncOutcome:
    """Start the sandbox on a free loopback port, sync both accounts into the embedded PostgreSQL, report."""
    from emag_sandbox.server import serve_in_process
    from expectations.checkpoint import data_docs_index

    home = get_settings().home / DEMO_HOME
    options = ["--products", str(products), "--seed", str(seed), *([] if rate_limit else ["--no-rate-limit"])]
    with serve_in_process(*options) as server:
        console.print(f"eMAG sandbox: {server.url} (rate limit {'3/s' if rate_limit else 'off'})")
        os.environ.update({k: v for k, v in server.env.items() if k != "EMAG_SANDBOX_URL"})
        os.environ["EMAG_SYNC_HOME"] = str(home)
        for name in (
            "EMAG_SYNC_DATABASE_URL", "EMAG_MAIN_API_URL", "EMAG_FBE_API_URL",
            "EMAG_SYNC_DATA_DOCS_DIR", "EMAG_SYNC_DATA_DOCS_URL",
        ):  # fmt: skip
            os.environ.pop(name, None)
        settings = get_settings()
        outcome = run_sync(settings, "both", SyncOptions())
    engine = engine_from_settings(settings)
    try:
        console.print(incident_queries_table(engine))
    finally:
        engine.dispose()
    console.print(
        f"data-quality reports (Great Expectations Data Docs): {data_docs_index(home)}", soft_wrap=True
    )
    at = f"EMAG_SYNC_HOME={shlex.quote(str(home))}"
    console.print(
        f"to open the report links above: {at} emag-sync docs  (serves {DEFAULT_DATA_DOCS_URL})",
        soft_wrap=True,
    )
    console.print(f"run history: {at} emag-sync runs", soft_wrap=True)
    return outcome
