"""The offer-update audit (app.emag_price_updates): the intent before a request, its outcome after, for
price and stock updates alike (``kind``).

An outcome keeps eMAG's answer (accepted, refused with its messages, or none) apart from what a re-read
of the offer found; the status is derived from the two, so a refusal is never 'applied'. What differs
between the kinds (the fields compared, the offer columns written, the audit columns) is said here once,
by kind, so the sender and the reconciler stay one.
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
from emag_sync.limits import DEFAULT_WAREHOUSE_ID
from emag_sync.prices.rules import money_text
from emag_sync.schema import PRICE_FIELDS, offers, price_updates

Kind = Literal["price", "stock"]
Status = Literal["sending", "applied", "refused", "not-applied", "uncertain", "invalid", "not-sent"]
# "unavailable": eMAG answered every attempt 429 or 503 (it did not act on the save, and did not refuse it).
Answer = Literal["accepted", "refused", "no-answer", "unavailable"]
# What a re-read found, for the fields that were sent: all as asked ("new prices"), as asked and as before
# because they were the same ("same prices"), as before ("old prices"), anything else; "... stock" alike.
Found = Literal[
    "new prices", "same prices", "old prices", "other prices",
    "new stock", "same stock", "old stock", "other stock",
    "not found", "read failed",
]  # fmt: skip
Values = Mapping[str, object]
Source = Literal["cli", "cli-bulk", "flow"]
RereadSource = Literal["save", "reconcile", "sync"]
SENDING: Status = "sending"
# Re-read values that differ from what the offer row held before: the row takes them.
CHANGED_ON_EMAG: frozenset[Found] = frozenset({"new prices", "other prices", "new stock", "other stock"})
# What a re-read after a lost answer found that a later read may still change: the save may land late,
# the read may work next time. ("not found" stays uncertain: re-reading it on every run would cost a
# request per run for an offer eMAG no longer has.)
UNSETTLED_FOUND: frozenset[Found] = frozenset({"old prices", "old stock", "read failed"})
_NOUN: dict[Kind, str] = {"price": "prices", "stock": "stock"}


def derive_status(answer: Answer, found: Found | None, *, settled: bool = False) -> Status:
    """The audit status from eMAG's answer and what the re-read found: one rule whatever the answer.

    A re-read showing what was sent, changed from before, settles the row as applied (a refused request
    that eMAG saved anyway included: its messages stay beside it). Accepted is applied. A refusal that
    left the offer as it was is refused. Without an answer (lost, or its writer died) the old prices
    prove nothing until the read is ``settled`` (made at least SETTLE_SECONDS after the save, when a save
    in flight has landed or never will): uncertain until then, not-applied after. Anything else
    (other prices, not found, a failed read) is uncertain.
    """
    verdict = None if found is None else found.split()[0]
    if answer == "accepted" or verdict == "new":
        return "applied"
    if answer == "refused":
        return "refused" if verdict in ("old", "same") else "uncertain"
    if verdict == "same":
        return "applied"
    if verdict == "old" and settled:
        return "not-applied"
    return "uncertain"


def classify_reread(kind: Kind, asked: Values, old: Values, held: Values | None) -> Found:
    """Compare the fields ``asked`` for (``asked_values``) with what eMAG ``held`` (``held_values``)."""
    if held is None:
        return "not found"
    landed = all(held.get(name) == value for name, value in asked.items())
    unchanged = all(held.get(name) == old.get(name) for name in asked)
    verdict = ("same" if unchanged else "new") if landed else ("old" if unchanged else "other")
    found: Found = f"{verdict} {_NOUN[kind]}"  # type: ignore[assignment]  # one of the eight above
    return found


def asked_values(kind: Kind, entity: Mapping[str, Any]) -> dict[str, object]:
    """The compared fields an offer/save entity asks for: its prices, or its warehouse's stock."""
    if kind == "stock":
        [item] = entity["stock"]
        return {"stock": int(item["value"])}
    return {name: _decimal(value) for name, value in entity.items() if name in PRICE_FIELDS}


def held_values(kind: Kind, record: Mapping[str, Any], warehouse_id: int | None = None) -> dict[str, object]:
    """What a product_offer/read record holds of a kind's fields: the prices, or the warehouse's stock
    (``stock``) beside the offer's totals (general and estimated stock, which the offer row takes)."""
    if kind == "stock":
        return {
            "stock": warehouse_stock(record, warehouse_id or DEFAULT_WAREHOUSE_ID),
            "general_stock": _integer(record.get("general_stock")),
            "estimated_stock": _integer(record.get("estimated_stock")),
        }
    return dict(prices_of(record))


def warehouse_stock(record: Mapping[str, Any], warehouse_id: int) -> int | None:
    """The stock of one warehouse in a record's ``stock`` list (an entry without warehouse_id is
    warehouse 1, as eMAG's reads sometimes omit it); None when the record lists no such warehouse."""
    for item in warehouses_of(record):
        if item[0] == warehouse_id:
            return item[1]
    return None


def warehouses_of(record: Mapping[str, Any]) -> list[tuple[int, int | None]]:
    """(warehouse_id, value) of each entry of a record's ``stock`` list."""
    entries = record.get("stock")
    found = []
    for item in entries if isinstance(entries, list) else []:
        if isinstance(item, Mapping):
            warehouse = _integer(item.get("warehouse_id", DEFAULT_WAREHOUSE_ID))
            found.append(
                (DEFAULT_WAREHOUSE_ID if warehouse is None else warehouse, _integer(item.get("value")))
            )
    return found


def _integer(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    return None


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


def prices_json(values: Values | None) -> dict[str, str] | None:
    if values is None:
        return None
    return {
        k: money_text(v) for k, v in values.items() if k in PRICE_FIELDS and isinstance(v, Decimal | None)
    }


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
    values: Values | None = None  # held_values of what was read
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
    engine: Engine, intents: Sequence[Mapping[str, Any]], who: Requester, sent_at: datetime
) -> list[int]:
    """One 'sending' row per update (its ``intent_columns``), committed before the request goes out; the
    ids in order."""
    common = {
        "requested_by": who.requested_by,
        "source": who.source,
        "flow_run_id": who.flow_run_id,
        "status": SENDING,
        "sent_at": sent_at,
    }
    with engine.begin() as conn:
        return [
            conn.execute(
                price_updates.insert().values(**common, **intent).returning(price_updates.c.id)
            ).scalar_one()
            for intent in intents
        ]


def record_outcome(conn: Connection, audit_id: int, outcome: Outcome) -> None:
    """Complete an intent row with eMAG's answer, the re-read and the status derived from them."""
    reread = outcome.reread
    held = reread.values if reread else None
    response = {  # the compact form earlier versions wrote, kept for whoever reads it
        "isError": {"accepted": False, "refused": True}.get(outcome.answer),
        "messages": list(outcome.messages),
        "error": outcome.error,
        "re_read": prices_json(held) or None,
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
            **_reread_columns(reread),
        )
    )


def record_reread(conn: Connection, audit_id: int, reread: Reread) -> None:
    """Add to an audit row what reading the offer back found (the row's answer and status stay)."""
    conn.execute(
        price_updates.update().where(price_updates.c.id == audit_id).values(**_reread_columns(reread))
    )


def _reread_columns(reread: Reread | None) -> dict[str, Any]:
    held = reread.values if reread else None
    return {
        "reread_at": reread.at if reread else None,
        "reread_source": reread.source if reread else None,
        "reread_found": reread.found if reread else None,
        "reread_prices": prices_json(held) or None,
        "reread_stock": _integer(held.get("stock")) if held else None,
    }


def write_offer_values(
    conn: Connection, account: Account, sku: str, kind: Kind, values: Values, held_at: datetime
) -> None:
    """Set the offer row's fields of ``kind`` to what eMAG holds since ``held_at`` (``held_values``)."""
    if kind == "stock":
        write_offer_stock(conn, account, sku, values, held_at)
    else:
        write_offer_prices(conn, account, sku, values, held_at)


def write_offer_stock(
    conn: Connection, account: Account, sku: str, values: Values, held_at: datetime
) -> None:
    """Set the offer row's stock (general, available, reserved) to what eMAG holds since ``held_at``
    (stock_pushed_at): a sync page read before that time must not take it back. Without the totals (a
    read that had none) the row is left to the next sync."""
    general, estimated = _integer(values.get("general_stock")), _integer(values.get("estimated_stock"))
    if general is None or estimated is None:
        return
    changes = {
        "stock": general,
        "available_stock": estimated,
        "reserved_stock": max(0, general - estimated),
        "updated_at": func.now(),
        "content_hash": "",  # (see write_offer_prices)
        "stock_pushed_at": held_at,
    }
    if general == 0:  # eMAG's rule: no stock, not sellable (the other way round needs the next sync's read)
        changes["visibility"] = "hidden"
    conn.execute(
        offers.update().where(offers.c.account == account.name, offers.c.sku == sku).values(**changes)
    )


def write_offer_prices(
    conn: Connection, account: Account, sku: str, values: Values, held_at: datetime
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
    kind: Kind
    requested_at: datetime
    requested_by: str
    source: str
    sku: str
    account: str  # the account's name
    emag_offer_id: int | None
    currency: str | None
    old: dict[str, Decimal | None]
    new: dict[str, Decimal | None]
    warehouse_id: int | None
    old_stock: int | None
    new_stock: int | None
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
    reread_stock: int | None
    large_change_allowed: bool
    error: str | None
    mass_zero_allowed: bool = False

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> AuditRow:
        response = row["emag_response"] if isinstance(row["emag_response"], dict) else {}
        return cls(
            id=row["id"],
            kind=row["kind"],
            requested_at=row["requested_at"],
            requested_by=row["requested_by"],
            source=row["source"],
            sku=row["sku"],
            account=row["account"],
            emag_offer_id=row["emag_offer_id"],
            currency=row["currency"],
            old={name: row[f"old_{name}"] for name in PRICE_FIELDS},
            new={name: row[f"new_{name}"] for name in PRICE_FIELDS},
            warehouse_id=row["warehouse_id"],
            old_stock=row["old_stock"],
            new_stock=row["new_stock"],
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
            reread_stock=row["reread_stock"],
            large_change_allowed=bool(row["large_change_allowed"]),
            mass_zero_allowed=bool(row["mass_zero_allowed"]),
            error=response.get("error"),
        )

    @property
    def sent(self) -> dict[str, Any]:
        """The offer/save entity sent (rows from before intents were written: the sale price and min/max)."""
        if self.sent_entity is not None:
            return self.sent_entity
        return {name: money_text(value) for name, value in self.new.items() if value is not None}

    @property
    def asked(self) -> dict[str, object]:
        """The compared fields this update asked for (``asked_values``)."""
        return asked_values(self.kind, self.sent)

    @property
    def before(self) -> dict[str, object]:
        """What eMAG held of those fields before it was sent."""
        return {"stock": self.old_stock} if self.kind == "stock" else dict(self.old)


def price_history(
    engine: Engine,
    *,
    limit: int = 20,
    sku: str | None = None,
    account: str | None = None,
    kind: Kind | None = None,
) -> list[AuditRow]:
    """The latest audit rows, newest first, optionally for one SKU, account and/or kind."""
    query = select(price_updates).order_by(price_updates.c.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(price_updates.c.kind == kind)
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
