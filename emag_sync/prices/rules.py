"""Price rules: what an operator may ask for, checked against the stored offer as eMAG would check it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from emag_sync.accounts import AccountType
from emag_sync.errors import OfferNotPublishedError, PriceUpdateError
from emag_sync.limits import OFFER_STATUS_ACTIVE, OFFER_STATUS_NAMES, PRICE_DECIMALS, PRICE_QUANTUM
from emag_sync.schema import MAX_MONEY, PRICE_FIELDS

# VAT ids are platform-specific and only listed by eMAG's vat/read, which the sandbox does not serve.
# Assumption, for display only (the VAT-inclusive price is never sent): id 1 is the platform's standard
# rate, id 2 its reduced rate, id 3 zero. Rates per platform currency: RO 21 % / 11 % (since 2025-08-01),
# BG 20 % / 9 %, HU 27 % / 5 %. An id outside this map shows no VAT-inclusive figure instead of a guess.
VAT_RATES: dict[str, dict[int, Decimal]] = {
    "RON": {1: Decimal("0.21"), 2: Decimal("0.11"), 3: Decimal("0")},
    "BGN": {1: Decimal("0.20"), 2: Decimal("0.09"), 3: Decimal("0")},
    "HUF": {1: Decimal("0.27"), 2: Decimal("0.05"), 3: Decimal("0")},
}


@dataclass(frozen=True)
class PriceRequest:
    """One asked-for change: new sale price, optionally new min/max, for one SKU of one account."""

    sku: str
    account: AccountType
    price: Decimal
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    line: int | None = None  # the CSV line, for bulk files

    @property
    def where(self) -> str:
        at = f"line {self.line}: " if self.line is not None else ""
        return f"{at}{self.sku} on eMAG {self.account.label}"


@dataclass(frozen=True)
class StoredOffer:
    """The offer row as the database holds it."""

    row_id: int
    sku: str
    account: AccountType
    emag_offer_id: int | None
    sale_price: Decimal | None
    min_sale_price: Decimal | None
    max_sale_price: Decimal | None
    recommended_price: Decimal | None
    currency: str | None
    vat_id: int | None
    status: int | None
    is_active: bool


@dataclass(frozen=True)
class PlannedUpdate:
    """A validated request with the offer it changes: ready to send."""

    request: PriceRequest
    offer: StoredOffer

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
    """A price as eMAG takes it: a finite Decimal > 0 with at most 4 decimals (never via float)."""
    if isinstance(value, float):
        raise PriceUpdateError(f"{where}: {field_name} must be given as text or Decimal, not a float")
    try:
        price = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise PriceUpdateError(f"{where}: {field_name} {value!r} is not a number") from None
    if not price.is_finite():
        raise PriceUpdateError(f"{where}: {field_name} {value!r} is not a number")
    if price <= 0:
        raise PriceUpdateError(f"{where}: {field_name} must be greater than 0, got {price}")
    if _decimals(price) > PRICE_DECIMALS:
        raise PriceUpdateError(
            f"{where}: {field_name} {price} has more than {PRICE_DECIMALS} decimals (eMAG's maximum)"
        )
    if price >= MAX_MONEY:
        raise PriceUpdateError(f"{where}: {field_name} {price} is too large")
    return price


def parse_account(value: str, *, where: str) -> AccountType:
    """``main`` or ``fbe`` (any case) to an account."""
    try:
        return AccountType(value.strip().lower())
    except ValueError:
        raise PriceUpdateError(f"{where}: account must be main or fbe, got {value!r}") from None


def make_request(
    sku: str,
    account: str | AccountType,
    price: object,
    min_price: object | None = None,
    max_price: object | None = None,
    *,
    line: int | None = None,
) -> PriceRequest:
    """A request from operator input (CLI options, flow form, CSV cells); errors name SKU/account/field."""
    sku = sku.strip()
    at = f"line {line}: " if line is not None else ""
    if not sku:
        raise PriceUpdateError(f"{at}sku is empty")
    acct = account if isinstance(account, AccountType) else parse_account(account, where=f"{at}{sku}")
    where = f"{at}{sku} on eMAG {acct.label}"
    return PriceRequest(
        sku=sku,
        account=acct,
        price=parse_price(price, field_name="price", where=where),
        min_price=None if _blank(min_price) else parse_price(min_price, field_name="min_price", where=where),
        max_price=None if _blank(max_price) else parse_price(max_price, field_name="max_price", where=where),
        line=line,
    )


# --- validation ------------------------------------------------------------------------------------


def check_published(request: PriceRequest, offer: StoredOffer | None) -> StoredOffer:
    """The offer, or OfferNotPublishedError in the operator's terms when it cannot take a price."""
    prefix = f"line {request.line}: " if request.line is not None else ""
    base = f"{prefix}{request.sku} is not published on eMAG {request.account.label}"
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


def plan_update(request: PriceRequest, offer: StoredOffer) -> PlannedUpdate:
    """Validate the request against the stored offer, as eMAG would, before anything is sent."""
    where = request.where
    low = request.min_price if request.min_price is not None else offer.min_sale_price
    high = request.max_price if request.max_price is not None else offer.max_sale_price
    if low is None or high is None:
        absent = "min_sale_price" if low is None else "max_sale_price"
        flag = "--min-price" if low is None else "--max-price"
        raise PriceUpdateError(f"{where}: the offer has no stored {absent}; give one with {flag}")
    if low >= high:
        raise PriceUpdateError(
            f"{where}: min_price {low} must be lower than max_price {high} (eMAG refuses min >= max)"
        )
    if not low <= request.price <= high:
        raise PriceUpdateError(
            f"{where}: price {request.price} is outside the allowed range [{low}, {high}] "
            f"{offer.currency or ''}".rstrip()
            + "; change the price or pass --min-price/--max-price"
        )
    recommended = offer.recommended_price
    if recommended is not None and request.price >= recommended:
        raise PriceUpdateError(
            f"{where}: price {request.price} must be below the offer's recommended_price {recommended} "
            "(eMAG requires recommended_price > sale_price); change the recommended price on eMAG first"
        )
    return PlannedUpdate(request, offer)


def vat_rate(offer: StoredOffer) -> Decimal | None:
    """The offer's VAT rate from the documented map (see VAT_RATES), or None when unknown."""
    if offer.vat_id is None or offer.currency is None:
        return None
    return VAT_RATES.get(offer.currency.upper(), {}).get(offer.vat_id)


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
