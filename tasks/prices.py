"""Price updates back to eMAG: validate against the stored offer, save with offer/save, audit, reconcile."""

from __future__ import annotations

import csv
import getpass
import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from rich.table import Table
from sqlalchemy import Connection, Engine, func, select, tuple_
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from emag_sync.errors import (
    EmagApiError,
    EmagBusinessError,
    EmagUncertainWriteError,
    OfferNotPublishedError,
    PriceUpdateError,
)
from emag_sync.schema import offers, price_updates
from emag_sync.settings import AccountType, Settings

log = logging.getLogger(__name__)

MAX_OFFERS_PER_SAVE = 50  # eMAG: bulk saves take at most 50 entities per request
PRICE_DECIMALS = 4  # eMAG: prices are ex-VAT "with up to four decimals"
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_DECIMALS)
MAX_PRICE = Decimal(10) ** 10  # what app's NUMERIC(14, 4) money columns can hold
OFFER_STATUS_ACTIVE = 1  # product_offer/read status: 0 inactive, 1 active, 2 end of life
CSV_REQUIRED_COLUMNS = ("sku", "account", "price")
CSV_OPTIONAL_COLUMNS = ("min_price", "max_price")
ARTIFACT_KEY = "emag-price-updates"

# VAT ids are platform-specific and only listed by eMAG's vat/read, which the sandbox does not serve.
# Assumption, for display only (the VAT-inclusive price is never sent): id 1 is the platform's standard
# rate, id 2 its reduced rate, id 3 zero. Rates per platform currency: RO 21 % / 11 % (since 2025-08-01),
# BG 20 % / 9 %, HU 27 % / 5 %. An id outside this map shows no VAT-inclusive figure instead of a guess.
VAT_RATES: dict[str, dict[int, Decimal]] = {
    "RON": {1: Decimal("0.21"), 2: Decimal("0.11"), 3: Decimal("0")},
    "BGN": {1: Decimal("0.20"), 2: Decimal("0.09"), 3: Decimal("0")},
    "HUF": {1: Decimal("0.27"), 2: Decimal("0.05"), 3: Decimal("0")},
}

Status = Literal["applied", "refused", "uncertain", "invalid", "not-sent"]
Source = Literal["cli", "cli-bulk", "flow"]
PRICE_FIELDS = ("sale_price", "min_sale_price", "max_sale_price")


class OfferWriter(Protocol):
    """What an update needs from tasks.client.EmagClient (one account, shared rate limiter)."""

    def save_offers(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def read_offer(self, emag_id: int) -> dict[str, Any] | None: ...


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
        return {"id": self.emag_offer_id} | {k: _money_text(v) for k, v in self.new_values.items()}


@dataclass
class PriceUpdateResult:
    """The verdict for one request: what happened, and what eMAG and the database now hold."""

    request: PriceRequest
    status: Status
    message: str
    old_price: Decimal | None = None
    new_price: Decimal | None = None
    currency: str | None = None
    emag_offer_id: int | None = None
    audit_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "applied"

    def as_row(self) -> dict[str, str]:
        """One row of the result table (strings, so it renders the same in rich and in Prefect)."""
        return {
            "line": "" if self.request.line is None else str(self.request.line),
            "sku": self.request.sku,
            "account": self.request.account.label,
            "old price": _money_text(self.old_price),
            "new price": _money_text(self.new_price),
            "currency": self.currency or "",
            "status": self.status,
            "message": self.message,
        }


@dataclass
class CsvProblem:
    """A CSV line that cannot become a request."""

    line: int
    message: str
    sku: str = ""
    account: str = ""


@dataclass
class ParsedCsv:
    requests: list[PriceRequest] = field(default_factory=list)
    problems: list[CsvProblem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- parsing


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
    if price >= MAX_PRICE:
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


def parse_price_csv(text: str) -> ParsedCsv:
    """Rows of ``sku,account,price[,min_price,max_price]``; bad lines reported by their line number.

    A SKU listed twice for the same account is refused on every line: which price was meant is unknown.
    """
    parsed = ParsedCsv()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None:
        parsed.problems.append(CsvProblem(1, "the file is empty; expected a header sku,account,price"))
        return parsed
    columns = [name.strip().lower() for name in header]
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS]
    if missing or unknown or len(set(columns)) != len(columns):
        detail = "; ".join(
            part
            for part in (
                f"missing column(s) {', '.join(missing)}" if missing else "",
                f"unknown column(s) {', '.join(unknown)}" if unknown else "",
                "a column appears twice" if len(set(columns)) != len(columns) else "",
            )
            if part
        )
        parsed.problems.append(
            CsvProblem(1, f"header: {detail}; expected sku,account,price[,min_price,max_price]")
        )
        return parsed
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        row = dict(zip(columns, cells, strict=False))
        sku, account = row.get("sku", "").strip(), row.get("account", "").strip()
        if len(cells) != len(columns):
            message = f"line {line}: expected {len(columns)} columns ({','.join(columns)}), got {len(cells)}"
            parsed.problems.append(CsvProblem(line, message, sku, account))
            continue
        try:
            parsed.requests.append(
                make_request(
                    sku, account, row["price"], row.get("min_price"), row.get("max_price"), line=line
                )
            )
        except PriceUpdateError as exc:
            parsed.problems.append(CsvProblem(line, str(exc), sku, account))
    lines: dict[tuple[str, AccountType], list[int]] = {}
    for request in parsed.requests:
        lines.setdefault((request.sku, request.account), []).append(request.line or 0)
    for request in [r for r in parsed.requests if len(lines[(r.sku, r.account)]) > 1]:
        parsed.requests.remove(request)
        others = ", ".join(str(n) for n in lines[(request.sku, request.account)])
        parsed.problems.append(
            CsvProblem(
                request.line or 0,
                f"{request.where}: listed on lines {others}; keep one line per SKU and account",
                request.sku,
                request.account.value,
            )
        )
    parsed.problems.sort(key=lambda p: p.line)
    return parsed


# ---------------------------------------------------------------------------------------------- validation


def find_offers(
    engine: Engine, keys: Iterable[tuple[str, AccountType]]
) -> dict[tuple[str, AccountType], StoredOffer]:
    """The stored offers for these (SKU, account) pairs, in one query."""
    wanted = [(sku, account.value) for sku, account in keys]
    if not wanted:
        return {}
    query = select(offers).where(tuple_(offers.c.sku, offers.c.account_type).in_(wanted))
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    found = {}
    for row in rows:
        offer = StoredOffer(
            row_id=row["id"],
            sku=row["sku"],
            account=AccountType(row["account_type"]),
            emag_offer_id=row["emag_offer_id"],
            sale_price=row["sale_price"],
            min_sale_price=row["min_sale_price"],
            max_sale_price=row["max_sale_price"],
            recommended_price=row["recommended_price"],
            currency=row["currency"],
            vat_id=row["vat_id"],
            status=row["status"],
            is_active=row["is_active"],
        )
        found[(offer.sku, offer.account)] = offer
    return found


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
        state = {0: "inactive", 2: "end of life"}.get(offer.status or 0, f"status {offer.status}")
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


def prepare_updates(
    engine: Engine, requests: Sequence[PriceRequest]
) -> tuple[list[PlannedUpdate], list[PriceUpdateResult]]:
    """Look every request's offer up and validate it: (ready to send, refused with a reason)."""
    stored = find_offers(engine, [(r.sku, r.account) for r in requests])
    planned: list[PlannedUpdate] = []
    refused: list[PriceUpdateResult] = []
    for request in requests:
        offer = stored.get((request.sku, request.account))
        try:
            planned.append(plan_update(request, check_published(request, offer)))
        except PriceUpdateError as exc:
            refused.append(
                PriceUpdateResult(
                    request,
                    "invalid",
                    str(exc),
                    old_price=offer.sale_price if offer else None,
                    new_price=request.price,
                    currency=offer.currency if offer else None,
                    emag_offer_id=offer.emag_offer_id if offer else None,
                )
            )
    return planned, refused


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
        ("sale price (ex-VAT)", _money_text(offer.sale_price), _money_text(request.price)),
        (
            vat_label,
            _plain(with_vat(offer.sale_price, rate)),
            _plain(with_vat(request.price, rate)),
        ),
        ("min sale price", _money_text(offer.min_sale_price), _money_text(new_min)),
        ("max sale price", _money_text(offer.max_sale_price), _money_text(new_max)),
        ("currency", currency, currency),
    ]


# ---------------------------------------------------------------------------------------------- sending


def apply_updates(
    engine: Engine,
    writer: OfferWriter,
    plans: Sequence[PlannedUpdate],
    *,
    requested_by: str,
    source: Source,
    flow_run_id: str | None = None,
) -> list[PriceUpdateResult]:
    """Send one account's validated updates in chunks of at most 50; each chunk's outcome in one transaction.

    ``isError`` re-reads the chunk's offers, because eMAG may have saved part of it; a lost answer
    (EmagUncertainWriteError) re-reads too and is recorded as uncertain with what eMAG really holds.
    """
    accounts = {plan.request.account for plan in plans}
    if len(accounts) > 1:
        raise ValueError("apply_updates takes one account's updates; group them first")
    audit = _Audit(requested_by=requested_by, source=source, flow_run_id=flow_run_id)
    results: list[PriceUpdateResult] = []
    stop: str | None = None
    for chunk in _chunks(plans, MAX_OFFERS_PER_SAVE):
        if stop is not None:
            results += [_result(p, "not-sent", f"not sent: {stop}") for p in chunk]
            continue
        try:
            answer = writer.save_offers([plan.entity() for plan in chunk])
        except EmagBusinessError as exc:
            results += _reconcile(engine, writer, chunk, audit, exc, uncertain_write=False)
        except EmagUncertainWriteError as exc:
            results += _reconcile(engine, writer, chunk, audit, exc, uncertain_write=True)
        except EmagApiError as exc:
            # Refused before eMAG could act (auth, 4xx, outlasted retries): later chunks would fail alike.
            stop = str(exc)
            results += [_result(p, "not-sent", f"not sent: {exc}") for p in chunk]
        else:
            response = {"isError": False, "results": answer}
            try:
                applied = []
                with engine.begin() as conn:
                    for plan in chunk:
                        _write_offer(conn, plan.offer.row_id, plan.new_values)
                        audit_id = audit.write(conn, plan, "applied", response)
                        applied.append(
                            _result(plan, "applied", "applied on eMAG and in the database", audit_id)
                        )
                results += applied
            except SQLAlchemyError as exc:
                # eMAG holds the new prices; the database could not take them. Say so per row (the operator
                # must not retry blindly) and send nothing more that could not be recorded either.
                reason = str(exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc).splitlines()[0]
                stop = f"the database failed after eMAG applied an earlier chunk ({reason})"
                log.error("price updates applied on eMAG but not recorded in the database: %s", reason)
                results += [
                    _result(
                        plan,
                        "uncertain",
                        f"applied on eMAG, but the database and audit could not be written ({reason}); "
                        f"a sync of {plan.request.account.value} will record eMAG's price",
                    )
                    for plan in chunk
                ]
    return results


def _reconcile(
    engine: Engine,
    writer: OfferWriter,
    chunk: Sequence[PlannedUpdate],
    audit: _Audit,
    error: EmagApiError,
    *,
    uncertain_write: bool,
) -> list[PriceUpdateResult]:
    """Re-read every offer of a chunk whose save failed and record, per offer, what eMAG holds."""
    held: dict[int, dict[str, Decimal | None] | None] = {}
    reread_errors: dict[int, str] = {}
    for plan in chunk:
        try:
            record = writer.read_offer(plan.emag_offer_id)
        except EmagApiError as exc:
            reread_errors[plan.emag_offer_id] = str(exc)
            record = None
        held[plan.emag_offer_id] = None if record is None else _prices_of(record)
    results: list[PriceUpdateResult] = []
    with engine.begin() as conn:
        for plan in chunk:
            now = held[plan.emag_offer_id]
            reason = _failure_reason(error, plan.emag_offer_id, uncertain_write=uncertain_write)
            response = {
                "isError": None if uncertain_write else True,  # None: eMAG's answer never arrived
                "messages": [str(m) for m in error.messages],
                "error": str(error),
                "re_read": None if now is None else {k: _money_text(v) for k, v in now.items()},
            }
            if now is None:
                why = reread_errors.get(plan.emag_offer_id, "eMAG did not return the offer")
                status: Status = "uncertain"
                message = f"{reason}; re-reading the offer failed ({why}): check it on eMAG, then sync"
            else:
                landed = [k for k, v in plan.new_values.items() if now.get(k) == v]
                changed = [k for k, v in plan.new_values.items() if plan.old_values.get(k) != v]
                if len(landed) == len(plan.new_values) and not uncertain_write:
                    status, message = "applied", f"{reason}; but re-read shows the new prices saved"
                elif not uncertain_write and not any(k in landed for k in changed):
                    status, message = "refused", f"{reason}; nothing changed (re-read)"
                else:
                    status = "uncertain"
                    message = f"{reason}; eMAG now holds {_describe(now, plan.offer.currency)}"
                if status != "refused":
                    _write_offer(conn, plan.offer.row_id, now)
            audit_id = audit.write(conn, plan, status, response)
            results.append(_result(plan, status, message, audit_id))
    return results


def _failure_reason(error: EmagApiError, emag_offer_id: int, *, uncertain_write: bool) -> str:
    """Why a save failed, for one offer: eMAG's messages naming it (else all of them), or the lost answer."""
    if uncertain_write:
        return f"the answer was lost ({error})"
    messages = [str(m) for m in error.messages]
    mine = [m for m in messages if str(emag_offer_id) in m]
    return f"eMAG refused: {'; '.join(mine or messages) or error}"


@dataclass
class _Audit:
    requested_by: str
    source: Source
    flow_run_id: str | None

    def write(self, conn: Connection, plan: PlannedUpdate, status: Status, response: dict[str, Any]) -> int:
        """One app.emag_price_updates row: who asked, old values, the values asked for, eMAG's answer."""
        offer = plan.offer
        new_min = plan.request.min_price if plan.request.min_price is not None else offer.min_sale_price
        new_max = plan.request.max_price if plan.request.max_price is not None else offer.max_sale_price
        audit_id: int = conn.execute(
            price_updates.insert()
            .values(
                requested_by=self.requested_by,
                source=self.source,
                flow_run_id=self.flow_run_id,
                sku=offer.sku,
                account_type=offer.account.value,
                emag_offer_id=offer.emag_offer_id,
                currency=offer.currency,
                old_sale_price=offer.sale_price,
                old_min_sale_price=offer.min_sale_price,
                old_max_sale_price=offer.max_sale_price,
                new_sale_price=plan.request.price,
                new_min_sale_price=new_min,
                new_max_sale_price=new_max,
                status=status,
                emag_response=json.loads(json.dumps(response, default=str)),
            )
            .returning(price_updates.c.id)
        ).scalar_one()
        return audit_id


def _write_offer(conn: Connection, row_id: int, values: Mapping[str, Decimal | None]) -> None:
    """Set the offer row's prices to what eMAG now holds."""
    changes: dict[str, Any] = {k: v for k, v in values.items() if k in PRICE_FIELDS and v is not None}
    if "sale_price" in changes:
        changes["price"] = changes["sale_price"]
    # An empty hash never matches a record's, so the next sync rewrites this row from eMAG's data
    # even if eMAG's values went back to what the row's old hash described.
    changes |= {"updated_at": func.now(), "content_hash": ""}
    conn.execute(offers.update().where(offers.c.id == row_id).values(**changes))


def _prices_of(record: dict[str, Any]) -> dict[str, Decimal | None]:
    """The price fields of a product_offer/read record (decimals arrive as strings)."""
    out: dict[str, Decimal | None] = {}
    for name in PRICE_FIELDS:
        raw = record.get(name)
        try:
            out[name] = None if raw in (None, "") else Decimal(str(raw))
        except InvalidOperation:
            out[name] = None
    return out


def _result(
    plan: PlannedUpdate, status: Status, message: str, audit_id: int | None = None
) -> PriceUpdateResult:
    return PriceUpdateResult(
        plan.request,
        status,
        message,
        old_price=plan.offer.sale_price,
        new_price=plan.request.price,
        currency=plan.offer.currency,
        emag_offer_id=plan.offer.emag_offer_id,
        audit_id=audit_id,
    )


# ---------------------------------------------------------------------------------------------- helpers


def requested_by_os_user() -> str:
    """The operator's login name, for the audit row."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown-user"


@contextmanager
def emag_writers(settings: Settings) -> Iterator[Callable[[AccountType], OfferWriter]]:
    """One client per account, opened on first use, pacing on the same budget as the account's syncs.

    That budget is the process-wide limiter, plus the Prefect global concurrency limit when one is set up,
    so a price update and a sync of the same account never exceed eMAG's 3 requests/s together.
    """
    from tasks.client import EmagClient  # imported when sending: validation alone needs no HTTP stack
    from tasks.secrets import resolve_account_config
    from tasks.shared_limit import shared_limiter_for

    clients: dict[AccountType, OfferWriter] = {}
    with ExitStack() as stack:

        def writer_for(account: AccountType) -> OfferWriter:
            if account not in clients:
                config = resolve_account_config(settings, account)
                clients[account] = stack.enter_context(EmagClient(config, limiter=shared_limiter_for(config)))
            return clients[account]

        yield writer_for


def run_single(
    engine: Engine,
    request: PriceRequest,
    writer_for: Callable[[AccountType], OfferWriter],
    *,
    requested_by: str,
    source: Source,
    flow_run_id: str | None = None,
    show: Callable[[PlannedUpdate], None] | None = None,
    dry_run: bool = False,
) -> PriceUpdateResult | None:
    """Look up, show, validate and send one update; raises PriceUpdateError before anything is sent.

    Returns None on a dry run (shown and validated, not sent).
    """
    offer = find_offers(engine, [(request.sku, request.account)]).get((request.sku, request.account))
    offer = check_published(request, offer)
    if show is not None:  # shown before validation, so a refused price is seen next to the stored range
        show(PlannedUpdate(request, offer))
    plan = plan_update(request, offer)
    if dry_run:
        return None
    writer = writer_for(request.account)
    [result] = apply_updates(
        engine, writer, [plan], requested_by=requested_by, source=source, flow_run_id=flow_run_id
    )
    return result


def run_bulk(
    engine: Engine,
    requests: Sequence[PriceRequest],
    writer_for: Callable[[AccountType], OfferWriter],
    *,
    requested_by: str,
    source: Source,
    flow_run_id: str | None = None,
    dry_run: bool = False,
) -> list[PriceUpdateResult]:
    """Validate every request, then send the valid ones per account; results in input order.

    On a dry run the valid ones come back as 'not-sent' after validation.
    """
    planned, results = prepare_updates(engine, requests)
    for account in AccountType:
        mine = [plan for plan in planned if plan.request.account is account]
        if not mine:
            continue
        if dry_run:
            results += [_result(plan, "not-sent", "valid (dry run, not sent)") for plan in mine]
            continue
        results += apply_updates(
            engine,
            writer_for(account),
            mine,
            requested_by=requested_by,
            source=source,
            flow_run_id=flow_run_id,
        )
    order = {id(request): i for i, request in enumerate(requests)}
    return sorted(results, key=lambda r: order[id(r.request)])


def result_rows(
    results: Iterable[PriceUpdateResult], problems: Iterable[CsvProblem] = ()
) -> list[dict[str, str]]:
    """Every line's verdict as table rows (malformed CSV lines included), in file order."""
    rows = [result.as_row() for result in results]
    rows += [
        {
            "line": str(p.line),
            "sku": p.sku,
            "account": p.account.upper(),
            "old price": "",
            "new price": "",
            "currency": "",
            "status": "invalid",
            "message": p.message,
        }
        for p in problems
    ]
    return sorted(rows, key=lambda row: int(row["line"] or 0))


def _chunks(items: Sequence[PlannedUpdate], size: int) -> Iterator[Sequence[PlannedUpdate]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _describe(values: dict[str, Decimal | None], currency: str | None) -> str:
    unit = f" {currency}" if currency else ""
    return ", ".join(f"{k} {_money_text(v)}{unit}" for k, v in values.items())


def _money_text(value: Decimal | None) -> str:
    return "" if value is None else str(value.quantize(PRICE_QUANTUM))


def _plain(value: Decimal | None) -> str:
    return "" if value is None else str(value)


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _blank(value: object | None) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# ---------------------------------------------------------------------------------------------- output

RESULT_COLUMNS = ("line", "sku", "account", "old price", "new price", "currency", "status", "message")


def changes_table(plan: PlannedUpdate) -> Table:
    """What a single update changes, for the terminal."""
    offer = plan.offer
    table = Table(title=f"{offer.sku} on eMAG {offer.account.label} (offer id {offer.emag_offer_id})")
    table.add_column("")
    table.add_column("now", justify="right")
    table.add_column("new", justify="right")
    for name, now, new in change_rows(plan):
        table.add_row(name, now, new, style="bold" if now != new else None)
    return table


def results_table(rows: Sequence[dict[str, str]]) -> Table:
    """Per-line verdicts, for the terminal."""
    table = Table(title="Price updates")
    for column in RESULT_COLUMNS:
        table.add_column(column, justify="right" if "price" in column or column == "line" else "left")
    colours = {"applied": "green", "invalid": "red", "refused": "red", "uncertain": "yellow"}
    for row in rows:
        table.add_row(*(row[c] for c in RESULT_COLUMNS), style=colours.get(row["status"]))
    return table


def summary(rows: Sequence[dict[str, str]]) -> str:
    """'3 applied, 1 invalid' for logs and the artifact description."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to do"


def publish_results(rows: Sequence[dict[str, str]]) -> str | None:
    """The result table as a Prefect table artifact when running inside a flow run; its id, else None."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    artifact_id = create_table_artifact(
        table=[dict(row) for row in rows],
        key=ARTIFACT_KEY,
        description=f"eMAG price updates: {summary(rows)}",
    )
    return str(artifact_id)
