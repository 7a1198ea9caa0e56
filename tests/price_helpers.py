"""What the price tests share: a small sandbox on a port, offer rows as a sync leaves them, audit reads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import insert, select

from emag_sandbox.state import SandboxState
from emag_sync.accounts import Account, AccountType, legacy_account
from emag_sync.api import open_client
from emag_sync.api.client import EmagClient
from emag_sync.prices import csv_input, rules
from emag_sync.prices.audit import Requester
from emag_sync.prices.csv_input import ParsedCsv
from emag_sync.prices.rules import PriceRequest
from emag_sync.schema import offers, price_updates, products
from emag_sync.settings import get_settings

FBE, MAIN = legacy_account(AccountType.FBE), legacy_account(AccountType.MAIN)
# The registered accounts of the tests' template database, by name (what operator input may name).
REGISTERED = {account.name: account for account in (MAIN, FBE)}


def make_request(*args: Any, **kwargs: Any) -> PriceRequest:
    """``rules.make_request`` against the template's registered accounts."""
    return rules.make_request(*args, accounts=REGISTERED, **kwargs)


def parse_price_csv(text: str, **kwargs: Any) -> ParsedCsv:
    """``csv_input.parse_price_csv`` against the template's registered accounts."""
    return csv_input.parse_price_csv(text, accounts=REGISTERED, **kwargs)


# Who the price tests' updates are requested by, and the sandbox's eMAG ids of the offers they use.
TESTER = Requester("tester", "cli")
EMG469_ID, EMG470_ID, EMG1_ID = 200001405, 200001408, 200000001
PRODUCTS = 500  # FBE holds EMG469 (range 79.21..132.58, recommended 164.63) and EMG470 (139.66..411.16)


def seed_offers(engine, state: SandboxState, account: Account) -> None:
    """Product and offer rows for every sandbox record of the account, as a sync would leave them."""
    records = [r for r in state.catalogue_records(account) if r.get("part_number")]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(products),
            [
                {
                    "sku": r["part_number"],
                    "account_type": account.kind.value,
                    "account": account.name,
                    "emag_id": r["id"],
                    "raw_emag_data": {},
                    "content_hash": "seed",
                    "last_synced_at": now,
                }
                for r in records
            ],
        )
        product_ids = dict(
            conn.execute(select(products.c.sku, products.c.id).where(products.c.account == account.name))
            .tuples()
            .all()
        )
        conn.execute(
            insert(offers),
            [
                {
                    "product_id": product_ids[r["part_number"]],
                    "sku": r["part_number"],
                    "account_type": account.kind.value,
                    "account": account.name,
                    "emag_offer_id": r["id"],
                    "price": r["sale_price"],
                    "sale_price": r["sale_price"],
                    "recommended_price": r["recommended_price"],
                    "min_sale_price": r["min_sale_price"],
                    "max_sale_price": r["max_sale_price"],
                    "currency": r["currency"],
                    "vat_id": r["vat_id"],
                    "status": r["status"],
                    "content_hash": "seed",
                    "last_synced_at": now,
                }
                for r in records
            ],
        )


def offer_row(engine, sku: str, account: AccountType = FBE) -> dict:
    with engine.connect() as conn:
        row = conn.execute(
            select(offers).where(offers.c.sku == sku, offers.c.account == account.name)
        ).mappings()
        return dict(row.one())


def audit_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(price_updates).order_by(price_updates.c.id)).mappings()]


def saves_sent(state: SandboxState, account: AccountType | None = None) -> list:
    return [
        r
        for r in state.request_log
        if (r.resource, r.action) == ("offer", "save") and (account is None or r.account == str(account))
    ]


def client_for(account: AccountType, transport: httpx.BaseTransport | None = None) -> EmagClient:
    return open_client(get_settings(), account, transport=transport)


def sync_account_once(engine, state: SandboxState, account: AccountType):
    """What a sync's load does with the account's current catalogue: one run, one batch."""
    from emag_sync.schema import sync_runs
    from tasks.load import load_batch
    from tasks.transform import transform_batch

    with engine.begin() as conn:
        run_id = conn.execute(
            insert(sync_runs)
            .values(
                account_type=account.kind.value,
                account=account.name,
                status="running",
                items_per_page=100,
                pages_per_batch=5,
            )
            .returning(sync_runs.c.id)
        ).scalar_one()
    frames = transform_batch(state.catalogue_records(account), account, pages=1, synced_at=datetime.now(UTC))
    return load_batch(engine, run_id, account, frames, last_page=1)


def valid_rows(state: SandboxState, account: AccountType, n: int) -> list[tuple[str, str]]:
    """(sku, new price) for n published offers: a quarter of the way down to their min price, always
    allowed, a change, and well within EMAG_MAX_PRICE_CHANGE."""
    rows = []
    for record in state.catalogue_records(account):
        sale, low = Decimal(record["sale_price"]), Decimal(record["min_sale_price"])
        new = (sale - (sale - low) / 4).quantize(Decimal("0.01"))
        if record["status"] == 1 and low <= new < sale:
            rows.append((record["part_number"], f"{new:.4f}"))
        if len(rows) == n:
            return rows
    raise AssertionError("not enough published offers in the sandbox")
