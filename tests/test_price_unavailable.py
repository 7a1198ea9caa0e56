"""A price save eMAG never took because it was unavailable is not a refusal: it says eMAG was unavailable.
The sandbox over loopback, behind a proxy that answers its saves 503 (as a load balancer does when eMAG's
backend is down); real PostgreSQL."""

from __future__ import annotations

import httpx

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.prices import apply
from emag_sync.prices.audit import Requester
from tests.price_helpers import (
    audit_rows,
    client_for,
    make_request,
    offer_row,
    saves_sent,
    seed_offers,
)

FBE = legacy_account(AccountType.FBE)


class SavesUnavailable(httpx.BaseTransport):
    """The way to the sandbox: offer/save answered 503 before it reaches eMAG; reads pass."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.saves = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/offer/save"):
            self.saves += 1
            return httpx.Response(503, text="Service Unavailable", request=request)
        return self.inner.handle_request(request)


def test_a_save_that_outlasted_its_retries_on_503_says_emag_was_unavailable(sandbox_env, engine, monkeypatch):
    monkeypatch.setenv("EMAG_MAX_ATTEMPTS", "2")
    sandbox = sandbox_env
    seed_offers(engine, sandbox.state, FBE)
    sku = "EMG7"
    stored = offer_row(engine, sku)
    request = make_request(sku, "fbe", f"{stored['min_sale_price']:f}", allow_large_change=True)
    proxy = SavesUnavailable()
    with client_for(FBE, proxy) as client:
        result = apply.run_single(engine, request, lambda _: client, Requester("tester", "cli"))

    assert (
        proxy.saves == 2 and saves_sent(sandbox.state) == []
    )  # retried (503 is not acted on), never applied
    assert result is not None and (result.status, result.answer) == ("not-applied", "unavailable")
    assert result.message.startswith("eMAG was unavailable, so nothing was changed (fbe: offer/save")
    assert "HTTP 503" in result.message and "refused" not in result.message
    [audit] = audit_rows(engine)
    assert (audit["status"], audit["emag_answer"]) == ("not-applied", "unavailable")
    assert offer_row(engine, sku)["sale_price"] == stored["sale_price"]  # unchanged
