"""The price-update audit (app.emag_price_updates): the intent before a request, its outcome after.

An outcome keeps eMAG's answer (accepted, refused with its messages, or none) apart from what a re-read
of the offer found; the status is derived from the two, so a refusal is never 'applied'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy import Connection, Engine, and_, func, or_, select

from emag_sync.accounts import Account
from emag_sync.prices.rules import PlannedUpdate, money_text
from emag_sync.schema import PRICE_FIELDS, offers, price_updates

Status = Literal["sending", "applied", "refused", "not-applied", "uncertain", "invalid", "not-sent"]
# "unavailable": eMAG answered every attempt 429 or 503 (it did not act on the save, and did not refuse it).
Answer = Literal["accepted", "refused", "no-answer", "unavailable"]
# What a re-read found, for the price fields that were sent: all as asked ("new prices"), as asked and
# as before because they were the same ("same prices"), as before ("old prices"), anything else.
Found = Literal["new prices", "same prices", "old prices", "other prices", "not found", "read failed"]
Source = Literal["cli", "cli-bulk", "flow"]
RereadSource = Literal["save", "reconcile", "sync"]
SENDING: Status = "sending"
# Re-read prices that differ from what the offer row held before: the row takes them.
CHANGED_ON_EMAG: frozenset[Found] = frozenset({"new prices", "other prices"})
# What a re-read after a lost answer found that a later read may still change: the save may land late,
# the read may work next time. ("not found" stays uncertain: re-reading it on every run would cost a
# request per run for an offer eMAG no longer has.)
UNSETTLED_FOUND: frozenset[Found] = frozenset({"old prices", "read failed"})


def derive_status(answer: Answer, found: Found | None, *, settled: bool = False) -> Status:
    """The audit status from eMAG's answer and what the re-read found: one rule whatever the answer.

    A re-read showing what was sent, changed from before, settles the row as applied (a refused request
    that eMAG saved anyway included: its messages stay beside it). Accepted is applied. A refusal that
    left the offer as it was is refused. Without an answer (lost, or its writer died) the old prices
    prove nothing until the read is ``settled`` (made at least SETTLE_SECONDS after the save, when a save
    in flight has landed or never will): uncertain until then, not-applied after. Anything else
    (other prices, not found, a failed read) is uncertain.
    """
    if answer == "accepted" or found == "new prices":
        return "applied"
    if answer == "refused":
        return "refused" if found in ("old prices", "same prices") else "uncertain"
    if found == "same prices":
        return "applied"
    if found == "old prices" and settled:
        return "not-applied"
    return "uncertain"


def classify_reread(
    sent: Mapping[str, Any], old: Mapping[str, Decimal | None], held: Mapping[str, Decimal | None] | None
) -> Found:
    """Compare the price fields of ``sent`` (an offer/save entity) with what eMAG ``held``."""
    if held is None:
        return "not found"
    asked = {name: _decimal(value) for name, value in sent.items() if name in PRICE_FIELDS}
    landed = all(held.get(name) == value for name, value in asked.items())
    unchanged = all(held.get(name) == old.get(name) for name in asked)
    if landed:
        return "same prices" if unchanged else "new prices"
    return "old prices" if unchanged else "other prices"


def prices_of(record: Mapping[str, Any]) -> dict[str, Decimal | None]:
    """The price fields of a product_offer/read record (decimals arrive as strings)."""
    return {name: _decimal(record.get(name)) for name in PRICE_FIELDS}


def _decimal(raw: object) -> Decimal | None:
    if raw is None or raw == "":
        return None
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        return None


def prices_json(values: Mapping[str, Decimal | None] | None) -> dict[str, str] | None:
    return None if values is None else {k: money_text(v) for k, v in values.items()}


@dataclass(frozen=True)
class Requester:
    """Who asked for a run's updates, written on each of its audit rows."""

    requested_by: str
    source: Source
    flow_run_id: str | None = None


@dataclass(frozen=True)
class Reread:
    """What reading an offer back found."""

    found: Found
    at: datetime | None
    source: RereadSource
    prices: Mapping[str, Decimal | None] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of one sent update."""

    answer: Answer
    status: Status
    answered_at: datetime | None
    messages: Sequence[str] = ()
    error: str | None = None  # the failure, when eMAG's answer was a refusal or never came
    reread: Reread | None = None


def write_intents(
    engine: Engine, plans: Sequence[PlannedUpdate], who: Requester, sent_at: datetime
) -> list[int]:
    """One 'sending' row per update, committed before the request goes out; the ids in plan order."""
    with engine.begin() as conn:
        return [
            conn.execute(
                price_updates.insert().values(**_intent(plan, who, sent_at)).returning(price_updates.c.id)
            ).scalar_one()
            for plan in plans
        ]


def _intent(plan: PlannedUpdate, who: Requester, sent_at: datetime) -> dict[str, Any]:
    offer, request = plan.offer, plan.request
    return {
        "requested_by": who.requested_by,
        "source": who.source,
        "flow_run_id": who.flow_run_id,
        "sku": offer.sku,
        "account_type": offer.account.kind.value,
        "account": offer.account.name,
        "emag_offer_id": offer.emag_offer_id,
        "currency": offer.currency,
        "old_sale_price": offer.sale_price,
        "old_min_sale_price": offer.min_sale_price,
        "old_max_sale_price": offer.max_sale_price,
        "new_sale_price": request.price,
        "new_min_sale_price": request.min_price if request.min_price is not None else offer.min_sale_price,
        "new_max_sale_price": request.max_price if request.max_price is not None else offer.max_sale_price,
        "status": SENDING,
        "sent_entity": plan.entity(),
        "sent_at": sent_at,
        "large_change_allowed": plan.large_change,
    }


def record_outcome(conn: Connection, audit_id: int, outcome: Outcome) -> None:
    """Complete an intent row with eMAG's answer, the re-read and the status derived from them."""
    reread = outcome.reread
    response = {  # the compact form earlier versions wrote, kept for whoever reads it
        "isError": {"accepted": False, "refused": True}.get(outcome.answer),
        "messages": list(outcome.messages),
        "error": outcome.error,
        "re_read": prices_json(reread.prices) if reread else None,
    }
    conn.execute(
        price_updates.update()
        .where(price_updates.c.id == audit_id)
        .values(
            status=outcome.status,
            answered_at=outcome.answered_at,
            emag_answer=outcome.answer,
            emag_messages=list(outcome.messages),
            emag_response=json.loads(json.dumps(response, default=str)),
            reread_at=reread.at if reread else None,
            reread_source=reread.source if reread else None,
            reread_found=reread.found if reread else None,
            reread_prices=prices_json(reread.prices) if reread else None,
        )
    )


def write_offer_prices(
    conn: Connection, account: Account, sku: str, values: Mapping[str, Decimal | None], held_at: datetime
) -> None:
    """Set the offer row's prices to what eMAG holds since ``held_at`` (prices_pushed_at): a sync page read
    before that time must not take them back."""
    changes: dict[str, Any] = {k: v for k, v in values.items() if k in PRICE_FIELDS and v is not None}
    if "sale_price" in changes:
        changes["price"] = changes["sale_price"]
    # An empty hash never matches a record's, so the next sync rewrites this row from eMAG's data
    # even if eMAG's values went back to what the row's old hash described.
    changes |= {"updated_at": func.now(), "content_hash": "", "prices_pushed_at": held_at}
    conn.execute(
        offers.update().where(offers.c.account == account.name, offers.c.sku == sku).values(**changes)
    )


# --- reading the audit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    """One audit row as the history and the reconciler read it."""

    id: int
    requested_at: datetime
    requested_by: str
    source: str
    sku: str
    account: str  # the account's name
    emag_offer_id: int | None
    currency: str | None
    old: dict[str, Decimal | None]
    new: dict[str, Decimal | None]
    status: str
    sent_entity: dict[str, Any] | None
    sent_at: datetime | None
    answered_at: datetime | None
    emag_answer: str | None
    emag_messages: list[str]
    reread_at: datetime | None
    reread_source: str | None
    reread_found: str | None
    reread_prices: dict[str, str] | None
    large_change_allowed: bool
    error: str | None

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> AuditRow:
        response = row["emag_response"] if isinstance(row["emag_response"], dict) else {}
        return cls(
            id=row["id"],
            requested_at=row["requested_at"],
            requested_by=row["requested_by"],
            source=row["source"],
            sku=row["sku"],
            account=row["account"],
            emag_offer_id=row["emag_offer_id"],
            currency=row["currency"],
            old={name: row[f"old_{name}"] for name in PRICE_FIELDS},
            new={name: row[f"new_{name}"] for name in PRICE_FIELDS},
            status=row["status"],
            sent_entity=row["sent_entity"],
            sent_at=row["sent_at"],
            answered_at=row["answered_at"],
            emag_answer=row["emag_answer"],
            emag_messages=[str(m) for m in row["emag_messages"] or response.get("messages") or []],
            reread_at=row["reread_at"],
            reread_source=row["reread_source"],
            reread_found=row["reread_found"],
            reread_prices=row["reread_prices"] or response.get("re_read"),
            large_change_allowed=bool(row["large_change_allowed"]),
            error=response.get("error"),
        )

    @property
    def sent(self) -> dict[str, Any]:
        """The price fields sent (rows from before intents were written: the sale price and min/max)."""
        if self.sent_entity is not None:
            return self.sent_entity
        return {name: money_text(value) for name, value in self.new.items() if value is not None}


def price_history(
    engine: Engine, *, limit: int = 20, sku: str | None = None, account: str | None = None
) -> list[AuditRow]:
    """The latest audit rows, newest first, optionally for one SKU and/or account."""
    query = select(price_updates).order_by(price_updates.c.id.desc()).limit(limit)
    if sku is not None:
        query = query.where(price_updates.c.sku == sku)
    if account is not None:
        query = query.where(price_updates.c.account == account)
    with engine.connect() as conn:
        return [AuditRow.from_mapping(row) for row in conn.execute(query).mappings()]


def unsettled_rows(
    conn: Connection, account: Account, *, sent_before: datetime | None = None
) -> list[AuditRow]:
    """The account's rows a later read of eMAG settles, oldest first: still 'sending' (interrupted only if
    their run is gone), or 'uncertain' after a lost answer whose re-read could not tell (UNSETTLED_FOUND)."""
    query = (
        select(price_updates)
        .where(
            price_updates.c.account == account.name,
            or_(
                price_updates.c.status == SENDING,
                and_(
                    price_updates.c.status == "uncertain",
                    price_updates.c.emag_answer == "no-answer",
                    price_updates.c.reread_found.in_(UNSETTLED_FOUND),
                ),
            ),
        )
        .order_by(price_updates.c.id)
    )
    if sent_before is not None:
        query = query.where(price_updates.c.sent_at < sent_before)
    return [AuditRow.from_mapping(row) for row in conn.execute(query).mappings()]
