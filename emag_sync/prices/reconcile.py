"""Interrupted and unsettled offer updates (prices and stock): audit rows left 'sending' by a run that
died, or 'uncertain' after a lost answer whose re-read could not tell, resolved by what eMAG holds once a
save in flight has landed or never will.

Two ways in: a price or stock run reads each such offer back from eMAG (``reconcile_interrupted``), and a
sync that has just loaded the account uses the values it read (``reconcile_interrupted_from_database``).
Both act only when no update run of the account is alive (the price lock, ``emag_sync.locks``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, or_, select

from emag_sync.accounts import Account
from emag_sync.errors import EmagApiError
from emag_sync.locks import try_price_reconcile_xact_lock
from emag_sync.prices.audit import (
    CHANGED_ON_EMAG,
    SENDING,
    AuditRow,
    Found,
    Kind,
    Outcome,
    Reread,
    Status,
    classify_reread,
    derive_status,
    held_values,
    record_outcome,
    unsettled_rows,
    write_offer_values,
)
from emag_sync.prices.current import BY_ID_READS_AT_MOST, CurrentReader, records_from_pages
from emag_sync.schema import PRICE_FIELDS, offers, products, sync_rejects

log = logging.getLogger(__name__)

# A save whose writer died may still have been in flight at eMAG; eMAG answers saves within about a
# second, so an intent this old has landed, or never will. Younger ones are waited for.
SETTLE_SECONDS = 5.0


@dataclass(frozen=True)
class Reconciled:
    """One interrupted update and what it turned out to be."""

    audit_id: int
    sku: str
    account: str  # the account's name
    status: Status
    found: Found
    interrupted: bool = True  # left 'sending' by a dead run; else 'uncertain' after a lost answer
    kind: Kind = "price"


def reconcile_interrupted(
    engine: Engine,
    reader: Callable[[], CurrentReader],
    account: Account,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> list[Reconciled]:
    """Read back from eMAG every offer of the account's interrupted updates and record what it holds.

    The caller holds the account's price lock exclusive (``locks.price_run_lock``), so every 'sending' row
    is a dead run's. ``reader`` opens the account's client only when there is something to read (one
    request per offer, or the account's pages when fewer, on its shared rate budget). An offer that cannot
    be read stays 'sending' for a later run; one whose intended values landed becomes applied and its row
    takes them.
    """
    with engine.connect() as conn:
        rows = unsettled_rows(conn, account)
    if not rows:
        return []
    youngest = max((row.sent_at or row.requested_at) for row in rows)
    wait = SETTLE_SECONDS - (clock() - youngest).total_seconds()
    if wait > 0:
        sleep(wait)
    ids = list(dict.fromkeys(row.emag_offer_id for row in rows if row.emag_offer_id is not None))
    read = _read_back(reader(), account, ids, clock)
    done: list[Reconciled] = []
    with engine.begin() as conn:
        for row in rows:
            if row.emag_offer_id not in read:
                continue
            found_record, at = read[row.emag_offer_id]
            held = None if found_record is None else held_values(row.kind, found_record, row.warehouse_id)
            reread = Reread(classify_reread(row.kind, row.asked, row.before, held), at, "reconcile", held)
            done.append(_resolve(conn, row, reread))
            if held is not None and reread.found in CHANGED_ON_EMAG:
                write_offer_values(conn, account, row.sku, row.kind, held, at)
    _log(account, done, "eMAG")
    return done


def _read_back(
    client: CurrentReader, account: Account, ids: list[int], clock: Callable[[], datetime]
) -> dict[int, tuple[Mapping[str, Any] | None, datetime]]:
    """Each offer as eMAG holds it now, and when it was read: the account's pages when they are fewer
    requests than reads by id (a killed bulk leaves 50 offers per chunk), then by id what the pages did not
    hold (None: eMAG has no such offer). An offer that cannot be read is left out, for a later run."""
    read: dict[int, tuple[Mapping[str, Any] | None, datetime]] = {}
    if len(ids) > BY_ID_READS_AT_MOST:
        try:
            count = client.count()
            if count.pages + 1 < len(ids):
                read = {i: (r, clock()) for i, r in records_from_pages(client, count, set(ids)).items()}
        except EmagApiError as exc:
            log.warning("%s: the pages could not be read to reconcile; reading by id: %s", account.title, exc)
    for offer_id in [i for i in ids if i not in read]:
        try:
            record = client.read_offer(offer_id)
        except EmagApiError as exc:
            log.warning("%s: offer id %s could not be read to reconcile it: %s", account.title, offer_id, exc)
            continue
        read[offer_id] = (record, clock())
    return read


def reconcile_interrupted_from_database(
    conn_or_engine: Connection | Engine,
    account: Account,
    read_started_at: datetime,
    *,
    run_id: int | None = None,
) -> list[Reconciled]:
    """Resolve the account's interrupted updates with the prices a sync has just loaded (no eMAG request).

    Call it after a COMPLETE read of the account has been loaded, with the time that read started. Only
    intents sent at least SETTLE_SECONDS before it are resolved, against active offer rows whose prices
    no later push replaced (prices_pushed_at before the read); offers rejected by ``run_id`` are left.
    Nothing happens while a price run of the account is alive. With a Connection, it works in the
    caller's transaction (the caller commits); with an Engine, in a transaction of its own.
    """
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.begin() as conn:
            return _from_database(conn, account, read_started_at, run_id)
    return _from_database(conn_or_engine, account, read_started_at, run_id)


def _from_database(
    conn: Connection, account: Account, read_started_at: datetime, run_id: int | None
) -> list[Reconciled]:
    if not try_price_reconcile_xact_lock(conn, account):
        log.info("%s: a price run is sending; its updates are not reconciled by this sync", account.title)
        return []
    rows = unsettled_rows(conn, account, sent_before=read_started_at - timedelta(seconds=SETTLE_SECONDS))
    if not rows:
        return []
    skus = {row.sku for row in rows}
    loaded: dict[Kind, dict[str, Mapping[str, Any]]] = {
        "price": _loaded_prices(conn, account, skus, read_started_at, run_id),
        "stock": _loaded_records(conn, account, skus, read_started_at, run_id),
    }
    done = []
    for row in rows:
        found = loaded[row.kind].get(row.sku)
        if found is None:
            continue
        held = held_values(row.kind, found, row.warehouse_id) if row.kind == "stock" else dict(found)
        reread = Reread(classify_reread(row.kind, row.asked, row.before, held), read_started_at, "sync", held)
        done.append(_resolve(conn, row, reread))
    _log(account, done, "the sync's read")
    return done


def _loaded_prices(
    conn: Connection, account: Account, skus: set[str], read_started_at: datetime, run_id: int | None
) -> dict[str, Mapping[str, Any]]:
    """The prices of active offer rows that hold what the read found (no push since it started)."""
    query = select(offers.c.sku, *(offers.c[name] for name in PRICE_FIELDS)).where(
        offers.c.account == account.name,
        offers.c.sku.in_(skus),
        offers.c.is_active,
        or_(offers.c.prices_pushed_at.is_(None), offers.c.prices_pushed_at < read_started_at),
    )
    if run_id is not None:
        query = query.where(
            ~exists().where(and_(sync_rejects.c.run_id == run_id, sync_rejects.c.sku == offers.c.sku))
        )
    return {row.sku: {name: row._mapping[name] for name in PRICE_FIELDS} for row in conn.execute(query)}


def _loaded_records(
    conn: Connection, account: Account, skus: set[str], read_started_at: datetime, run_id: int | None
) -> dict[str, Mapping[str, Any]]:
    """The records the sync loaded (the product row's raw record: its stock[] and totals) of active offers
    whose stock no later push replaced (stock_pushed_at before the read)."""
    query = (
        select(offers.c.sku, products.c.raw_emag_data)
        .join(products, products.c.id == offers.c.product_id)
        .where(
            offers.c.account == account.name,
            offers.c.sku.in_(skus),
            offers.c.is_active,
            or_(offers.c.stock_pushed_at.is_(None), offers.c.stock_pushed_at < read_started_at),
        )
    )
    if run_id is not None:
        query = query.where(
            ~exists().where(and_(sync_rejects.c.run_id == run_id, sync_rejects.c.sku == offers.c.sku))
        )
    return {row.sku: row.raw_emag_data for row in conn.execute(query) if isinstance(row.raw_emag_data, dict)}


def _resolve(conn: Connection, row: AuditRow, reread: Reread) -> Reconciled:
    # Every read here is settled: made SETTLE_SECONDS or more after the intent was sent.
    status = derive_status("no-answer", reread.found, settled=True)
    outcome = Outcome(
        answer="no-answer",
        status=status,
        answered_at=None,
        error=row.error
        if row.status != SENDING
        else "the run sending it stopped before eMAG's answer arrived",
        reread=reread,
    )
    record_outcome(conn, row.id, outcome)
    return Reconciled(row.id, row.sku, row.account, status, reread.found, row.status == SENDING, row.kind)


def _log(account: Account, done: list[Reconciled], source: str) -> None:
    if done:
        log.info("%s: %s", account.title, describe_reconciled(done, source))


def describe_reconciled(done: list[Reconciled], source: str = "eMAG") -> str:
    """'2 interrupted price update(s) reconciled from eMAG: 1 applied, 1 not-applied' (stock update(s), or
    offer update(s) when both kinds were)."""
    kinds = {r.kind for r in done}
    noun = f"{kinds.pop()} update(s)" if len(kinds) == 1 else "offer update(s)"
    counts: Mapping[str, int] = {s: sum(1 for r in done if r.status == s) for s in {r.status for r in done}}
    figures = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    uncertain = sum(1 for r in done if not r.interrupted)
    what = (
        "interrupted"
        if not uncertain
        else f"uncertain (lost answer){'' if uncertain == len(done) else ' or interrupted'}"
    )
    return f"{len(done)} {what} {noun} reconciled from {source}: {figures}"
