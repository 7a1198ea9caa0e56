"""Stock rules: what an operator may send for a MAIN offer's warehouse, checked before eMAG is called.

FBE stock is eMAG's own warehouse: it is refused here, never sent. A bulk that would empty a large share
of an account's active offers at once is refused as a broken export (the mass-zero guard).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Engine, func, select

from emag_sync.accounts import Account, AccountType
from emag_sync.errors import MassZeroStockError, StockUpdateError
from emag_sync.limits import DEFAULT_WAREHOUSE_ID, MAX_STOCK
from emag_sync.prices.audit import held_values, warehouses_of
from emag_sync.prices.rules import StoredOffer, check_published, parse_account
from emag_sync.schema import offers

# A stock as operators type it: ASCII digits only (int() would also take "1_000", " ١٢" and full-width digits).
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
FBE_REFUSAL = "FBE stock is managed by eMAG's warehouse"


@dataclass(frozen=True)
class StockRequest:
    """One asked-for stock: a warehouse's units for one SKU of one account."""

    sku: str
    account: Account
    stock: int
    warehouse_id: int | None = None  # None: warehouse 1, unless the offer lists another (see plan_stock)
    line: int | None = None  # the CSV line, for bulk files

    @property
    def where(self) -> str:
        return f"{self.sku} on eMAG {self.account.label}"


@dataclass(frozen=True)
class PlannedStock:
    """A validated stock request with the offer it changes: ready to send (an OfferChange)."""

    request: StockRequest
    offer: StoredOffer
    warehouse_id: int
    old_stock: int | None  # the warehouse's stock on eMAG when validated
    other_warehouses: int = 0  # the other warehouses' stock, which general_stock adds
    reserved: int = 0  # general_stock - estimated_stock when validated
    mass_zero: bool = False  # part of a bulk the operator allowed past the mass-zero guard

    kind: Literal["stock"] = field(default="stock", init=False)

    @property
    def account(self) -> Account:
        return self.offer.account

    @property
    def sku(self) -> str:
        return self.offer.sku

    @property
    def emag_offer_id(self) -> int:
        assert self.offer.emag_offer_id is not None  # check_published refuses offers without one
        return self.offer.emag_offer_id

    def entity(self) -> dict[str, Any]:
        """The light offer/save entity: the id and the one warehouse's stock, nothing else."""
        return {
            "id": self.emag_offer_id,
            "stock": [{"warehouse_id": self.warehouse_id, "value": self.request.stock}],
        }

    @property
    def before(self) -> dict[str, object]:
        return {"stock": self.old_stock}

    @property
    def confirmed(self) -> dict[str, object]:
        """What the offer holds once eMAG accepted the save (held_values' shape)."""
        general = self.other_warehouses + self.request.stock
        return {
            "stock": self.request.stock,
            "general_stock": general,
            "estimated_stock": max(0, general - self.reserved),
        }

    def intent_columns(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sku": self.sku,
            "account_type": self.account.kind.value,
            "account": self.account.name,
            "emag_offer_id": self.emag_offer_id,
            "warehouse_id": self.warehouse_id,
            "old_stock": self.old_stock,
            "new_stock": self.request.stock,
            "sent_entity": self.entity(),
            "mass_zero_allowed": self.mass_zero,
        }

    def describe(self, values: Mapping[str, object]) -> str:
        return f"stock {values.get('stock')} in warehouse {self.warehouse_id}"

    def result_fields(self) -> dict[str, Any]:
        return {
            "old_stock": self.old_stock,
            "new_stock": self.request.stock,
            "warehouse_id": self.warehouse_id,
        }

    def since(self, now: StoredOffer, at: datetime) -> PlannedStock:
        """The plan with the stock another update confirmed at or after ``at`` (while this one waited)."""
        if now.stock_pushed_at is None or now.stock_pushed_at < at or now.stock is None:
            return self
        return replace(self, old_stock=max(0, now.stock - self.other_warehouses))


# --- parsing ---------------------------------------------------------------------------------------


def parse_stock(value: object, *, field_name: str = "stock", where: str) -> int:
    """A stock as eMAG takes it: a whole number 0..65535 (text of ASCII digits, or an int; never a float)."""
    if isinstance(value, bool | float | Decimal):
        raise StockUpdateError(
            f"{field_name} must be a whole number 0..{MAX_STOCK}, got {value!r}", subject=where
        )
    text = str(value).strip()
    if isinstance(value, int):
        number = value
    elif _DIGITS.fullmatch(text.removeprefix("-")):
        number = int(text)
    else:
        raise StockUpdateError(f"{field_name} {text!r} is not a whole number (0..{MAX_STOCK})", subject=where)
    if not 0 <= number <= MAX_STOCK:
        raise StockUpdateError(
            f"{field_name} {number} is outside 0..{MAX_STOCK} (eMAG's stock per warehouse)", subject=where
        )
    return number


def make_stock_request(
    sku: str,
    account: str | Account,
    stock: object,
    warehouse_id: object | None = None,
    *,
    accounts: Mapping[str, Account],
    line: int | None = None,
) -> StockRequest:
    """A request from operator input (CLI options, flow form, CSV cells); errors name SKU/account/field."""
    sku = sku.strip()
    if not sku:
        raise StockUpdateError("sku is empty")
    acct = account if isinstance(account, Account) else parse_account(account, accounts, where=sku)
    where = f"{sku} on eMAG {acct.label}"
    number = parse_stock(stock, where=where)
    warehouse = None
    if warehouse_id is not None and str(warehouse_id).strip():
        warehouse = parse_stock(warehouse_id, field_name="warehouse_id", where=where)
        if warehouse < 1:
            raise StockUpdateError(f"warehouse_id must be 1 or more, got {warehouse}", subject=where)
    return StockRequest(sku, acct, number, warehouse, line)


# --- validation ------------------------------------------------------------------------------------


def check_main(request: StockRequest) -> None:
    """An FBE account's stock is eMAG's: refused in the operator's terms, before anything is read or sent."""
    if request.account.kind is AccountType.FBE:
        raise StockUpdateError(
            f"{request.sku}: {FBE_REFUSAL} (account {request.account.name} is FBE; stock is sent only for "
            "main accounts)",
            account=request.account,
        )


def check_stock_target(request: StockRequest, offer: StoredOffer | None) -> StoredOffer:
    """The offer, when it may take a stock: a MAIN account's, stored, active, published."""
    check_main(request)
    return check_published(request, offer)


def plan_stock(request: StockRequest, offer: StoredOffer, record: Mapping[str, Any]) -> PlannedStock:
    """Validate the request against the offer as eMAG holds it now (``record``, its product_offer/read):
    the warehouse is 1 unless the offer lists others, and must be one the offer lists."""
    listed = [warehouse for warehouse, _ in warehouses_of(record)] or [DEFAULT_WAREHOUSE_ID]
    warehouse = request.warehouse_id
    if warehouse is None:
        if len(set(listed)) > 1:
            raise StockUpdateError(
                f"the offer has stock in warehouses {', '.join(map(str, sorted(set(listed))))}: "
                "say which with warehouse_id",
                subject=request.where,
            )
        warehouse = listed[0]
    elif warehouse not in listed:
        raise StockUpdateError(
            f"warehouse_id {warehouse} is not one of the offer's warehouses ({', '.join(map(str, sorted(set(listed))))})",
            subject=request.where,
        )
    held = held_values("stock", record, warehouse)
    general, estimated = held["general_stock"], held["estimated_stock"]
    old = held["stock"]
    assert old is None or isinstance(old, int)
    others = sum(value or 0 for w, value in warehouses_of(record) if w != warehouse)
    reserved = max(0, general - estimated) if isinstance(general, int) and isinstance(estimated, int) else 0
    return PlannedStock(request, offer, warehouse, old, others, reserved)


def active_offer_count(engine: Engine, account: Account) -> int:
    """The account's active offers (the mass-zero guard's whole)."""
    query = select(func.count()).where(offers.c.account == account.name, offers.c.is_active)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def check_mass_zero(
    engine: Engine, requests: Sequence[StockRequest], *, max_share: Decimal, allow: bool
) -> set[Account]:
    """The accounts whose part of the bulk sets more than ``max_share`` of their active offers to 0; unless
    ``allow``, MassZeroStockError (nothing read or sent) for the first. Compared exactly: 0.2 x 200 offers
    is 40, and 40 zeros pass."""
    over: set[Account] = set()
    for account in dict.fromkeys(r.account for r in requests):
        zeros = len({r.sku for r in requests if r.account == account and r.stock == 0})
        if not zeros:
            continue
        active = active_offer_count(engine, account)
        if zeros <= max_share * active:
            continue
        if not allow:
            share = f"{Decimal(zeros) / active:.0%}" if active else "all"
            raise MassZeroStockError(
                f"the input sets {zeros} of the account's {active} active offers ({share}) to stock 0, more "
                f"than the {(max_share * 100).normalize():f}% EMAG_MAX_ZERO_STOCK_SHARE allows: nothing was "
                "sent. If the shelf is really empty, pass --allow-mass-zero (flow parameter allow_mass_zero)",
                account=account,
            )
        over.add(account)
    return over
