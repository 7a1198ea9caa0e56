"""Price updates that end where eMAG is (issue 17): one rule for settled and uncertain outcomes, files of
any size, two updates of one offer at once, the guard and the audit against eMAG's current values.
Real sandbox on a loopback port (stand-ins in front of it where eMAG must misbehave), real PostgreSQL."""

from __future__ import annotations

import pytest

from emag_sandbox.server import serve
from emag_sandbox.state import SandboxState
from emag_sync.accounts import AccountType
from emag_sync.prices import apply, csv_input
from emag_sync.prices.audit import Requester
from emag_sync.settings import get_settings
from tests.price_helpers import PRODUCTS, audit_rows, seed_offers, valid_rows

FBE = AccountType.FBE
TESTER = Requester("tester", "cli")


@pytest.fixture
def sandbox(monkeypatch):
    """A small sandbox on a loopback port (rate limit off), with the environment pointing at it."""
    state = SandboxState(products=PRODUCTS, rate_limit=False)
    with serve(state) as running:
        for name, value in running.env.items():
            monkeypatch.setenv(name, value)
        yield running


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    from emag_sync.cli.console import console

    monkeypatch.setattr(console, "width", 400)


# ---------------------------------------------------------------------------------------------- item 8


def test_a_file_of_ten_thousand_rows_is_looked_up_in_batches(sandbox, engine):
    """10,050 rows (dry run): one IN list of every pair made PostgreSQL answer 'stack depth limit
    exceeded' and nothing was validated or sent."""
    state = sandbox.state
    seed_offers(engine, state, FBE)
    good = valid_rows(state, FBE, 50)
    lines = ["sku,account,price", *(f"NOSUCH{n},fbe,10" for n in range(10_000))]
    lines += [f"{sku},fbe,{price}" for sku, price in good]  # found past the first batches
    parsed = csv_input.parse_price_csv("\n".join(lines) + "\n")

    with apply.emag_writers(get_settings()) as writer_for:
        results = apply.run_bulk(engine, parsed.requests, writer_for, TESTER, dry_run=True)

    assert len(results) == 10_050
    assert [r.status for r in results[-50:]] == ["not-sent"] * 50
    assert {r.message for r in results[-50:]} == {"valid (dry run, not sent)"}
    assert {r.status for r in results[:-50]} == {"invalid"}
    assert results[9_999].message.startswith("NOSUCH9999 is not published on eMAG FBE")
    assert audit_rows(engine) == [] and not [r for r in state.request_log if r.action == "save"]
