"""Price updates sent to eMAG in chunks of 50, each outcome audited; refused or lost saves re-read."""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, Engine, func, select, tuple_
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from emag_sync.accounts import AccountType
from emag_sync.api.responses import Envelope
from emag_sync.errors import EmagApiError, EmagBusinessError, EmagUncertainWriteError, PriceUpdateError
from emag_sync.limits import MAX_ENTITIES_PER_SAVE
from emag_sync.prices.csv_input import CsvProblem
from emag_sync.prices.rules import (
    PlannedUpdate,
    PriceRequest,
    StoredOffer,
    check_published,
    money_text,
    plan_update,
)
from emag_sync.schema import PRICE_FIELDS, offers, price_updates
from emag_sync.settings import Settings

log = logging.getLogger(__name__)

Status = Literal["applied", "refused", "uncertain", "invalid", "not-sent"]
Source = Literal["cli", "cli-bulk", "flow"]


class OfferWriter(Protocol):
    """What an update needs from emag_sync.api.EmagClient (one account, shared rate limiter)."""

    def save_offers(self, entities: Sequence[Mapping[str, Any]], *, subject: str = "") -> Envelope: ...

    def read_offer(self, emag_id: int) -> dict[str, Any] | None: ...


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
        """One row of the result table (strings, so it renders the same on the terminal and in Prefect)."""
        return {
            "line": "" if self.request.line is None else str(self.request.line),
            "sku": self.request.sku,
            "account": self.request.account.label,
            "old price": money_text(self.old_price),
            "new price": money_text(self.new_price),
            "currency": self.currency or "",
            "status": self.status,
            "message": self.message,
        }


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
    chunks = list(_chunks(plans, MAX_ENTITIES_PER_SAVE))
    for number, chunk in enumerate(chunks, start=1):
        if stop is not None:
            results += [_result(p, "not-sent", f"not sent: {stop}") for p in chunk]
            continue
        ids = ", ".join(str(plan.emag_offer_id) for plan in chunk)
        try:
            envelope = writer.save_offers(
                [plan.entity() for plan in chunk], subject=f"chunk {number}/{len(chunks)} (offer ids {ids})"
            )
        except EmagBusinessError as exc:
            results += _reconcile(engine, writer, chunk, audit, exc, uncertain_write=False)
        except EmagUncertainWriteError as exc:
            results += _reconcile(engine, writer, chunk, audit, exc, uncertain_write=True)
        except EmagApiError as exc:
            # Refused before eMAG could act (auth, 4xx, outlasted retries): later chunks would fail alike.
            stop = str(exc)
            results += [_result(p, "not-sent", f"not sent: {exc}") for p in chunk]
        else:
            response = {"isError": False, "messages": envelope.messages, "results": envelope.results}
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
                "re_read": None if now is None else {k: money_text(v) for k, v in now.items()},
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


def requested_by_os_user() -> str:
    """The operator's login name, for the audit row."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown-user"


@contextmanager
def emag_writers(settings: Settings) -> Iterator[Callable[[AccountType], OfferWriter]]:
    """One client per account, opened on first use on the account's shared rate budget (see open_client),
    so a price update and a sync of the same account never exceed eMAG's 3 requests/s together."""
    from emag_sync.api import open_client  # imported when sending: validation alone needs no HTTP stack

    clients: dict[AccountType, OfferWriter] = {}
    with ExitStack() as stack:

        def writer_for(account: AccountType) -> OfferWriter:
            if account not in clients:
                clients[account] = stack.enter_context(open_client(settings, account))
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
    return ", ".join(f"{k} {money_text(v)}{unit}" for k, v in values.items())


def summary(rows: Sequence[dict[str, str]]) -> str:
    """'3 applied, 1 invalid' for logs and the artifact description."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to do"
