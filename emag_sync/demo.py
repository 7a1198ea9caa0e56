"""``emag-sync demo``: sandbox + embedded PostgreSQL + the flow + the data-quality report, no set-up."""

from __future__ import annotations

import os

from emag_sync.console import console, incident_queries_table
from emag_sync.db import embedded_server_url, make_engine
from emag_sync.runner import SyncOutcome, run_sync
from emag_sync.settings import get_settings

# Kept apart from the database a real sync uses, even when EMAG_SYNC_DATABASE_URL is set.
DEMO_DATABASE = "emag_sync_demo"


def run_demo(*, products: int = 2550, seed: int = 7, rate_limit: bool = True) -> SyncOutcome:
    """Start the sandbox on a free loopback port, sync both accounts into the embedded PostgreSQL, report."""
    from emag_sandbox.server import serve
    from emag_sandbox.state import SandboxState

    settings = get_settings()
    demo_url = embedded_server_url(settings.home, database=DEMO_DATABASE)
    state = SandboxState(products=products, seed=seed, rate_limit=rate_limit)
    with serve(state) as server:
        console.print(f"eMAG sandbox: {server.url} (rate limit {'3/s' if rate_limit else 'off'})")
        os.environ.update(server.env)
        os.environ["EMAG_SYNC_DATABASE_URL"] = demo_url.render_as_string(hide_password=False)
        for name in ("EMAG_MAIN_API_URL", "EMAG_FBE_API_URL"):
            os.environ.pop(name, None)
        outcome = run_sync(get_settings(), "both")
    engine = make_engine(demo_url)
    try:
        console.print(incident_queries_table(engine))
    finally:
        engine.dispose()
    docs = settings.home / "gx"
    console.print(f"data-quality report (Great Expectations Data Docs) under: {docs}")
    return outcome
