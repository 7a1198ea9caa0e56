"""Price rules: what an operator may ask for, checked against the stored offer as eMAG would check it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from emag_sync.accounts import Account, AccountType
from emag_sync.errors import OfferNotPublishedError, PriceFix, PriceUpdateError
from emag_sync.limits import OFFER_STATUS_ACTIVE, OFFER_STATUS_NAMES, PRICE_DECIMALS, PRICE_QUANTUM
from emag_sync.platforms import vat_rate_for
from emag_sync.schema import MAX_MONEY, PRICE_FIELDS

# A price as operators type it, on the command line, in a CSV and in the Prefect form alike: ASCII digits,
# optionally one point and up to eMAG's 4 decimals (trailing zeros do not count). Python's Decimal() would
# also take "3_2.99", "1e2" and Arabic-Indic or full-width digits; the form's pattern would not.
PRICE_TEXT_PATTERN = rf"^[0-9]+([.][0-9]{{1,{PRICE_DECIMALS}}}0*)?$"
_DIGITS_AND_POINT = re.compile(r"[0-9]+([.][0-9]+)?", re.ASCII)


@dataclass(frozen=True)
class PriceRequest:
    """One asked-for change: new sale price, optionally new min/max, for one SKU of one account."""

    sku: str
    account: Account
    price: Decimal
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    line: int | None = None  # the CSV line, for bulk files; shown in its own column, never in messages
    allow_large_change: bool = False  # the operator means a change beyond EMAG_MAX_PRICE_CHANGE

    @property
    def where(self) -> str:
        return f"{self.sku} on eMAG {self.account.label}"


@dataclass(frozen=True)
class StoredOffer:
    """The offer row as the database holds it."""

    row_id: int
    sku: str
    account: Account
    emag_offer_id: int | None
    sale_price: Decimal | None
    min_sale_price: Decimal | None
    max_sale_price: Decimal | None
    recommended_price: Decimal | None
    currency: str | None
    vat_id: int | None
    status: int | None
    is_active: bool
    prices_pushed_at: datetime | None = None  # when a price update last confirmed what eMAG holds
    stock: int | None = None  # general_stock, every warehouse's
    stock_pushed_at: datetime | None = None  # when a stock update last confirmed what eMAG holds


@dataclass(frozen=True)
class PlannedUpdate:
    """A validated request with the offer it changes: ready to send."""

    request: PriceRequest
    offer: StoredOffer
    large_change: bool = False  # beyond EMAG_MAX_PRICE_CHANGE, allowed by the request

    kind: Literal["price"] = field(default="price", init=False)

    @property
    def warehouse_id(self) -> int | None:
        return None

    @property
    def account(self) -> Account:
        return self.offer.account

    @property
    def sku(self) -> str:
        return self.offer.sku

    @property
    def before(self) -> dict[str, object]:
        return dict(self.old_values)

    @property
    def confirmed(self) -> dict[str, object]:
        """What the offer holds once eMAG accepted the save."""
        return dict(self.new_values)

    def intent_columns(self) -> dict[str, Any]:
        offer, request = self.offer, self.request
        return {
            "kind": self.kind,
            "sku": offer.sku,
            "account_type": offer.account.kind.value,
            "account": offer.account.name,
            "emag_offer_id": offer.emag_offer_id,
            "currency": offer.currency,
            "old_sale_price": offer.sale_price,
            "old_min_sale_price": offer.min_sale_price,
            "old_max_sale_price": offer.max_sale_price,
            "new_sale_price": request.price,
            "new_min_sale_price": request.min_price
            if request.min_price is not None
            else offer.min_sale_price,
            "new_max_sale_price": request.max_price
            if request.max_price is not None
            else offer.max_sale_price,
            "sent_entity": self.entity(),
            "large_change_allowed": self.large_change,
        }

    def describe(self, values: Mapping[str, object]) -> str:
        unit = f" {self.offer.currency}" if self.offer.currency else ""
        return ", ".join(
            f"{k} {money_text(v)}{unit}" for k, v in values.items() if isinstance(v, Decimal | None)
        )

    def result_fields(self) -> dict[str, Any]:
        return {
            "old_price": self.offer.sale_price,
            "new_price": self.request.price,
            "currency": self.offer.currency,
        }

    def since(self, now: StoredOffer, at: datetime) -> PlannedUpdate:
        """The plan with the prices another update confirmed at or after ``at`` (while this one waited):
        they are what eMAG holds now, so the audit's old values and the re-read's comparison start there."""
        if now.prices_pushed_at is None or now.prices_pushed_at < at:
            return self
        fresh = replace(
            self.offer,
            sale_price=now.sale_price,
            min_sale_price=now.min_sale_price,
            max_sale_price=now.max_sale_price,
        )
        return replace(self, offer=fresh)

    @property
    def emag_offer_id(self) -> int:
        assert self.offer.emag_offer_id is not None  # find_offer refuses offers without one
        return self.offer.emag_offer_id

    @property
    def new_values(self) -> dict[str, Decimal]:
        """The fields this update sends, with their new values (min/max only when asked for)."""
        values = {"sale_price": self.request.price}
        if self.request.min_price is not None:
            values["min_sale_price"] = self.request.min_price
        if self.request.max_price is not None:
            values["max_sale_price"] = self.request.max_price
        return values

    @property
    def old_values(self) -> dict[str, Decimal | None]:
        return {name: getattr(self.offer, name) for name in PRICE_FIELDS}

    def entity(self) -> dict[str, Any]:
        """The offer/save entity: id and prices only (FBE stock belongs to eMAG), decimals as strings."""
        return {"id": self.emag_offer_id} | {k: money_text(v) for k, v in self.new_values.items()}


# --- parsing ---------------------------------------------------------------------------------------


def parse_price(value: object, *, field_name: str, where: str) -> Decimal:
    """A price as eMAG takes it: a finite Decimal > 0 with at most 4 decimals (never via float).

    The one parser of typed prices (command line, CSV, Prefect form): text must match PRICE_TEXT_PATTERN.
    """
    if isinstance(value, float):
        raise PriceUpdateError(f"{field_name} must be given as text or Decimal, not a float", subject=where)
    price = value if isinstance(value, Decimal) else _price_from_text(str(value), field_name, where)
    if not price.is_finite():
        raise PriceUpdateError(f"{field_name} {value!r} is not a number", subject=where)
    if price <= 0:
        raise PriceUpdateError(f"{field_name} must be greater than 0, got {price}", subject=where)
    if _decimals(price) > PRICE_DECIMALS:
        raise PriceUpdateError(
            f"{field_name} {price} has more than {PRICE_DECIMALS} decimals (eMAG's maximum)", subject=where
        )
    if price >= MAX_MONEY:
        raise PriceUpdateError(f"{field_name} {price} is too large", subject=where)
    return price


def _price_from_text(value: str, field_name: str, where: str) -> Decimal:
    """Text of ASCII digits and at most one point as a Decimal; a sign is left for the range check."""
    text = value.strip()
    digits = text.removeprefix("-")
    if not _DIGITS_AND_POINT.fullmatch(digits):
        raise PriceUpdateError(f"{field_name} {value!r} is not a number", subject=where)
    return Decimal(text)


def parse_account(value: str, accounts: Mapping[str, Account], *, where: str) -> Account:
    """A registered account's name (any case) to the account."""
    found = accounts.get(value.strip().lower())
    if found is None:
        known = ", ".join(sorted(accounts)) or "none"
        raise PriceUpdateError(f"account {value!r} is not registered (registered: {known})", subject=where)
    if not found.enabled:
        raise PriceUpdateError(
            f"account {found.name} is disabled (`emag-sync accounts enable {found.name}`)", subject=where
        )
    return found


def check_numbers(sku: str, account: str, price: object, min_price: object, max_price: object) -> None:
    """The price fields' form alone, before anything else is opened (the database, eMAG): PriceUpdateError
    naming the field, as make_request would."""
    name = account.strip().lower()
    where = f"{sku.strip()} on eMAG {AccountType(name).label if name in set(AccountType) else name}"
    for field_name, value in (("price", price), ("min_price", min_price), ("max_price", max_price)):
        if field_name == "price" or not _blank(value):
            parse_price(value, field_name=field_name, where=where)


def make_request(
    sku: str,
    account: str | Account,
    price: object,
    min_price: object | None = None,
    max_price: object | None = None,
    *,
    accounts: Mapping[str, Account],
    line: int | None = None,
    allow_large_change: bool = False,
) -> PriceRequest:
    """A request from operator input (CLI options, flow form, CSV cells); errors name SKU/account/field.
    ``accounts``: the registered ones, by name."""
    sku = sku.strip()
    if not sku:
        raise PriceUpdateError("sku is empty")
    acct = account if isinstance(account, Account) else parse_account(account, accounts, where=sku)
    where = f"{sku} on eMAG {acct.label}"
    return PriceRequest(
        sku=sku,
        account=acct,
        price=parse_price(price, field_name="price", where=where),
        min_price=None if _blank(min_price) else parse_price(min_price, field_name="min_price", where=where),
        max_price=None if _blank(max_price) else parse_price(max_price, field_name="max_price", where=where),
        line=line,
        allow_large_change=allow_large_change,
    )


# --- validation ------------------------------------------------------------------------------------


class OfferSubject(Protocol):
    """What names an offer in a request: its SKU and account (price and stock requests alike)."""

    @property
    def sku(self) -> str: ...

    @property
    def account(self) -> Account: ...


def check_published(request: OfferSubject, offer: StoredOffer | None) -> StoredOffer:
    """The offer, or OfferNotPublishedError in the operator's terms when it cannot take a price."""
    base = f"{request.sku} is not published on eMAG {request.account.label}"
    if offer is None:
        raise OfferNotPublishedError(f"{base} (no such offer in the database; run a sync if it is new)")
    if not offer.is_active:
        raise OfferNotPublishedError(f"{base} (the last sync no longer found it in the catalogue)")
    if offer.emag_offer_id is None:
        raise OfferNotPublishedError(f"{base} (the offer has no eMAG id)")
    if offer.status != OFFER_STATUS_ACTIVE:
        state = OFFER_STATUS_NAMES.get(offer.status or 0, f"status {offer.status}")
        raise OfferNotPublishedError(f"{base} (the offer is {state} on eMAG)")
    return offer


def plan_update(request: PriceRequest, offer: StoredOffer, *, max_change: Decimal) -> PlannedUpdate:
    """Validate the request against the stored offer, as eMAG would, before anything is sent.

    ``max_change`` (EMAG_MAX_PRICE_CHANGE) is the largest share of the current sale price a change may
    move it by unless the request allows a large change: a guard against typos (35.00 for 350.00).
    """
    where = request.where
    large = _is_large_change(offer.sale_price, request.price, max_change)
    if large and not request.allow_large_change:
        assert offer.sale_price is not None  # no current price, no large change
        direction = "below" if request.price < offer.sale_price else "above"
        share = abs(request.price - offer.sale_price) / offer.sale_price
        raise PriceUpdateError(
            f"price {request.price} is {_percent(share)} {direction} the current "
            f"{money_text(offer.sale_price)} {offer.currency or ''}".rstrip()
            + f", more than the {_percent(max_change)} EMAG_MAX_PRICE_CHANGE allows",
            subject=where,
            fix=PriceFix.ALLOW_LARGE_CHANGE,
        )
    low = request.min_price if request.min_price is not None else offer.min_sale_price
    high = request.max_price if request.max_price is not None else offer.max_sale_price
    if low is None or high is None:
        absent = "min_sale_price" if low is None else "max_sale_price"
        fix = PriceFix.GIVE_MIN_PRICE if low is None else PriceFix.GIVE_MAX_PRICE
        raise PriceUpdateError(f"the offer has no stored {absent}", subject=where, fix=fix)
    if low >= high:
        raise PriceUpdateError(
            f"min_price {low} must be lower than max_price {high} (eMAG refuses min >= max)", subject=where
        )
    if not low <= request.price <= high:
        raise PriceUpdateError(
            f"price {request.price} is outside the allowed range [{low}, {high}] {offer.currency or ''}".rstrip(),
            subject=where,
            fix=PriceFix.CHANGE_PRICE_OR_RANGE,
        )
    recommended = offer.recommended_price
    if recommended is not None and request.price >= recommended:
        raise PriceUpdateError(
            f"price {request.price} must be below the offer's recommended_price {recommended} "
            "(eMAG requires recommended_price > sale_price); change the recommended price on eMAG first",
            subject=where,
        )
    return PlannedUpdate(request, offer, large_change=large)


def _is_large_change(current: Decimal | None, new: Decimal, max_change: Decimal) -> bool:
    """Whether ``new`` moves ``current`` by more than ``max_change`` of it (no current price: never)."""
    if current is None or current <= 0:
        return False
    return abs(new - current) > current * max_change


def _percent(share: Decimal) -> str:
    """0.4 -> '40%', 0.3049 -> '30.5%'."""
    text = f"{(share * 100).quantize(Decimal('0.1')):f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


def vat_rate(offer: StoredOffer) -> Decimal | None:
    """The offer's VAT rate (emag_sync.platforms), or None when unknown: never a guess."""
    return vat_rate_for(
        offer.currency.upper() if offer.currency else None, offer.vat_id, offer.account.platform
    )


def with_vat(price: Decimal | None, rate: Decimal | None) -> Decimal | None:
    """The VAT-inclusive figure, rounded to cents, for display only."""
    if price is None or rate is None:
        return None
    return (price * (1 + rate)).quantize(Decimal("0.01"))


def change_rows(plan: PlannedUpdate) -> list[tuple[str, str, str]]:
    """(field, now, new) lines describing what the update changes, VAT-inclusive price included."""
    offer, request = plan.offer, plan.request
    rate = vat_rate(offer)
    currency = offer.currency or ""
    vat_label = (
        f"price incl. VAT {(rate * 100).normalize():f}%"
        if rate is not None
        else f"price incl. VAT (vat_id {offer.vat_id}: rate unknown)"
    )
    new_min = request.min_price if request.min_price is not None else offer.min_sale_price
    new_max = request.max_price if request.max_price is not None else offer.max_sale_price
    return [
        ("sale price (ex-VAT)", money_text(offer.sale_price), money_text(request.price)),
        (
            vat_label,
            _plain(with_vat(offer.sale_price, rate)),
            _plain(with_vat(request.price, rate)),
        ),
        ("min sale price", money_text(offer.min_sale_price), money_text(new_min)),
        ("max sale price", money_text(offer.max_sale_price), money_text(new_max)),
        ("currency", currency, currency),
    ]


def money_text(value: Decimal | None) -> str:
    """A price as eMAG shows it: four decimals; blank for none."""
    return "" if value is None else str(value.quantize(PRICE_QUANTUM))


def _plain(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _blank(value: object | None) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())
