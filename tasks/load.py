"""Load one batch in ONE transaction: COPY to staging, then set-based upserts, rejects and run progress.

A sub-step of ``tasks.sync_account``, called per batch inside its loop: a Prefect task per batch would cost
API calls and a task run in the UI for every few hundred records, so it stays a plain function.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from psycopg import Connection as PgConnection
from psycopg import sql
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    Numeric,
    SmallInteger,
    Text,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from emag_sync.accounts import Account
from emag_sync.api import RequestCounters
from emag_sync.api.paging import BY_ID
from emag_sync.run_row import BatchCounts
from emag_sync.runs import lock_running_run, record_batch
from emag_sync.schema import (
    OFFER_COLUMNS,
    PAGE,
    PRICE_FIELDS,
    PRODUCT_COLUMNS,
    READ_AT,
    REJECT_COLUMNS,
    SCHEMA,
    STOCK_FIELDS,
    offers,
    products,
    sync_rejects,
    sync_seen,
)
from tasks.transform import HIDDEN, BatchFrames

log = logging.getLogger(__name__)

# Session-lived staging tables emptied at every commit (ON COMMIT DELETE ROWS), so a batch never sees
# another's rows and a rolled-back batch leaves nothing behind. Created once per connection, not in every
# batch: creating and dropping them wrote the catalogue twice per batch (~5% of a first load's time).
STAGE_PRODUCTS = "emag_stage_products"
STAGE_OFFERS = "emag_stage_offers"
_KEY = ("sku", "account")


def _qualified(name: str) -> str:
    return f"{SCHEMA}.{name}"


def _columns(names: Sequence[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{name}" for name in names)


def _pg_type(column: Column[Any]) -> str:
    """The staging type of a column; JSONB is staged as text (the frames hold JSON text)."""
    if isinstance(column.type, JSONB):
        return "text"
    if isinstance(column.type, ARRAY):
        return _BINARY_TYPES[type(column.type.item_type)] + "[]"
    return _BINARY_TYPES[type(column.type)]


# psycopg's binary dumpers for COPY, by schema type (binary COPY is ~2x faster than text for Decimals).
_BINARY_TYPES: dict[type[Any], str] = {
    BigInteger: "int8",
    Integer: "int4",
    SmallInteger: "int2",
    Numeric: "numeric",
    Text: "text",
    Boolean: "bool",
    DateTime: "timestamptz",
}
_STAGED = {
    STAGE_PRODUCTS: [*(products.c[name] for name in PRODUCT_COLUMNS), Column(PAGE, Integer)],
    STAGE_OFFERS: [*(offers.c[name] for name in OFFER_COLUMNS), Column(READ_AT, DateTime(timezone=True))],
}


def _is_json(name: str) -> bool:
    return isinstance(products.c[name].type, JSONB) if name in products.c else False


def _copy_stage(conn: Connection, table: str, frame: pd.DataFrame) -> None:
    """Binary COPY of ``frame`` into a staging table, in conn's transaction (the DBAPI connection)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, PgConnection)  # psycopg 3 everywhere (emag_sync.db)
    columns = _STAGED[table]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    )
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types([_pg_type(c) for c in columns])
        for row in frame[[c.name for c in columns]].itertuples(index=False, name=None):
            copy.write_row(row)


def _copy_rejects(conn: Connection, run_id: int, frame: pd.DataFrame) -> None:
    """Text COPY of the transform's rejects (few, and their JSON text goes straight into JSONB)."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, PgConnection)
    names = ["run_id", *REJECT_COLUMNS]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(SCHEMA, sync_rejects.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in frame[REJECT_COLUMNS].itertuples(index=False, name=None):
            copy.write_row((run_id, *row))


def _stage(conn: Connection, frames: BatchFrames) -> None:
    """Staging tables with the target tables' column types (empty at the start of a batch), filled by COPY."""
    for table, columns in _STAGED.items():
        definitions = ", ".join(
            f"{c.name} {'TEXT' if isinstance(c.type, JSONB) else c.type.compile(dialect=conn.dialect)}"
            for c in columns
        )
        conn.execute(text(f"CREATE TEMP TABLE IF NOT EXISTS {table} ({definitions}) ON COMMIT DELETE ROWS"))
    _copy_stage(conn, STAGE_PRODUCTS, frames.products)
    _copy_stage(conn, STAGE_OFFERS, frames.offers)


# Step 1. Record the batch in the run's seen set; what was already there leaves staging. The same id
# and SKU seen earlier in the run is a duplicate (offset paging shifted it onto a later page); the same
# SKU under another id, or the same id under another SKU, is a reject. The seen lookups in RETURNING see
# the table as it was before this statement, i.e. only earlier batches.
_SEEN_SQL = f"""
WITH fresh AS (
    INSERT INTO {_qualified(sync_seen.name)} (run_id, emag_id, sku)
    SELECT :run_id, emag_id, sku FROM {STAGE_PRODUCTS}
    ON CONFLICT DO NOTHING
    RETURNING emag_id
), repeated AS (
    DELETE FROM {STAGE_PRODUCTS} s
    WHERE NOT EXISTS (SELECT 1 FROM fresh WHERE fresh.emag_id = s.emag_id)
    RETURNING s.emag_id, s.sku, s.{PAGE}, s.raw_emag_data::jsonb AS raw_emag_data,
        (SELECT v.sku FROM {_qualified(sync_seen.name)} v
         WHERE v.run_id = :run_id AND v.emag_id = s.emag_id) AS sku_of_id,
        (SELECT v.emag_id FROM {_qualified(sync_seen.name)} v
         WHERE v.run_id = :run_id AND v.sku = s.sku) AS id_of_sku
), rejected AS (
    INSERT INTO {_qualified(sync_rejects.name)}
        (run_id, account_type, account, page, emag_id, sku, reason, raw_payload)
    SELECT :run_id, :kind, :account, {PAGE}, emag_id::text, sku,
        CASE
            WHEN sku_of_id IS NOT NULL THEN
                format('id %s already loaded in this run with part_number %L', emag_id, sku_of_id)
            WHEN id_of_sku IS NOT NULL THEN
                format('part_number %L already loaded in this run under id %s', sku, id_of_sku)
            ELSE format('id %s / part_number %L collide with another record of this batch', emag_id, sku)
        END,
        raw_emag_data
    FROM repeated
    WHERE sku_of_id IS DISTINCT FROM sku
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh) AS fresh,
       (SELECT count(*) FROM repeated WHERE sku_of_id = sku) AS duplicates,
       (SELECT count(*) FROM rejected) AS rejected
"""


def _upsert_sql(table: str, columns: Sequence[str], select_sql: str, *, counter: str | None = None) -> str:
    """INSERT ... ON CONFLICT (sku, account) that rewrites a row only when its content changed.

    ``select_sql`` reads staging as ``s``. Unchanged active rows are filtered out before the insert, so
    the steady state (most rows unchanged) costs one index probe per row, not a JSONB parse and a
    conflict; the ON CONFLICT condition repeats the test for rows another transaction just wrote. The test
    is a scalar subquery, always one index probe per staged row: as NOT EXISTS, the planner (staging has no
    statistics) chose a hash anti-join that read the whole target table in every batch, so a first load
    of 100,000 records slowed down batch after batch.
    ``counter`` names a column that the insert sets to 1 and every rewrite increments.
    """
    assignments = [f"{name} = EXCLUDED.{name}" for name in columns if name not in (*_KEY, counter)]
    assignments.append("updated_at = now()")
    if counter is not None:
        assignments.append(f"{counter} = t.{counter} + 1")
    return f"""
INSERT INTO {_qualified(table)} AS t ({_columns(columns)})
{select_sql}
WHERE s.content_hash IS DISTINCT FROM (
    SELECT same.content_hash FROM {_qualified(table)} same
    WHERE same.sku = s.sku AND same.account = s.account AND same.is_active
)
ON CONFLICT ({_columns(_KEY)}) DO UPDATE SET {", ".join(assignments)}
WHERE t.content_hash IS DISTINCT FROM EXCLUDED.content_hash OR NOT t.is_active
RETURNING t.sku, (t.xmax = 0) AS inserted
"""


# Step 2. A price pushed from here and confirmed by eMAG after a page was read is newer than that page:
# the offer keeps it (and an empty hash, so the next sync rewrites the row from eMAG's data). Only rows
# with a push look at this; the partial index on prices_pushed_at keeps it free for the rest.
_KEEP_PUSHED_PRICES_SQL = f"""
UPDATE {STAGE_OFFERS} s
SET {", ".join(f"{name} = t.{name}" for name in ("price", *PRICE_FIELDS))}, content_hash = ''
FROM {_qualified(offers.name)} t
WHERE t.account = :account AND t.prices_pushed_at > s.{READ_AT}
  AND t.sku = s.sku AND t.account = s.account
RETURNING s.sku
"""
# The same for stock pushed from here (general, available and reserved stock; stock_pushed_at): an offer
# kept at 0 is not sellable, whatever the page said.
_KEEP_PUSHED_STOCK_SQL = f"""
UPDATE {STAGE_OFFERS} s
SET {", ".join(f"{name} = t.{name}" for name in STOCK_FIELDS)}, content_hash = '',
    visibility = CASE WHEN t.stock = 0 THEN '{HIDDEN}' ELSE s.visibility END
FROM {_qualified(offers.name)} t
WHERE t.account = :account AND t.stock_pushed_at > s.{READ_AT}
  AND t.sku = s.sku AND t.account = s.account
RETURNING s.sku
"""

# Step 3. Products; unchanged rows are not rewritten (updated_at stays), a returning row is reactivated.
_PRODUCTS_SQL = _upsert_sql(
    products.name,
    PRODUCT_COLUMNS,
    "SELECT "
    + ", ".join(f"s.{name}::jsonb" if _is_json(name) else f"s.{name}" for name in PRODUCT_COLUMNS)
    + f" FROM {STAGE_PRODUCTS} s",
)
# Step 4. Offers, joined to their product for product_id; sync_attempts counts the writes of a row.
_OFFERS_SQL = _upsert_sql(
    offers.name,
    [offers.c.product_id.name, *OFFER_COLUMNS, offers.c.sync_attempts.name],
    f"""SELECT p.id, {_columns(OFFER_COLUMNS, "s.")}, 1
FROM {STAGE_OFFERS} s
JOIN {STAGE_PRODUCTS} fresh ON fresh.sku = s.sku
JOIN {_qualified(products.name)} p ON p.sku = s.sku AND p.account = s.account""",
    counter=offers.c.sync_attempts.name,
)


def load_batch(
    engine: Engine,
    run_id: int,
    account: Account,
    frames: BatchFrames,
    *,
    last_page: int | None,
    pages: int = 1,
    counters: RequestCounters = RequestCounters(),
) -> BatchCounts:
    """Upsert a batch's products and offers, its rejects and the run's progress in ONE transaction.

    ``last_page`` is the batch's last catalogue page and ``pages`` how many it held (None and 0 for offers
    read by id); ``counters`` are the requests this batch cost (added to the run's totals, so a resumed run
    keeps counting).
    """
    with engine.begin() as conn:
        lock_running_run(conn, run_id, account)
        _stage(conn, frames)
        seen = conn.execute(
            text(_SEEN_SQL), {"run_id": run_id, "account": account.name, "kind": account.kind.value}
        ).one()
        kept: Sequence[str] = (
            conn.execute(text(_KEEP_PUSHED_PRICES_SQL), {"account": account.name}).scalars().all()
        )
        if kept:
            log.info(
                "%s: %d offers keep prices pushed after their page was read (%s)",
                account.title,
                len(kept),
                ", ".join(kept[:10]) + (" ..." if len(kept) > 10 else ""),
            )
        kept = conn.execute(text(_KEEP_PUSHED_STOCK_SQL), {"account": account.name}).scalars().all()
        if kept:
            log.info(
                "%s: %d offers keep stock pushed after their page was read (%s)",
                account.title,
                len(kept),
                ", ".join(kept[:10]) + (" ..." if len(kept) > 10 else ""),
            )
        written = conn.execute(text(_PRODUCTS_SQL)).all()
        offers_written = {row.sku for row in conn.execute(text(_OFFERS_SQL))}
        if len(frames.rejects):
            _copy_rejects(conn, run_id, frames.rejects)

        inserted = {row.sku for row in written if row.inserted}
        updated = ({row.sku for row in written} | offers_written) - inserted
        counts = BatchCounts(
            pages=pages,
            read=frames.records,
            loaded=seen.fresh,
            inserted=len(inserted),
            updated=len(updated),
            unchanged=seen.fresh - len(inserted) - len(updated),
            rejected=len(frames.rejects) + seen.rejected,
            duplicates=frames.duplicates + seen.duplicates,
        )
        record_batch(conn, run_id, counts, counters, last_page=last_page)
        named: Sequence[Mapping[Any, Any]] = ()
        if counts.rejected:
            params = {"run_id": run_id, "limit": REJECTS_NAMED}
            named = conn.execute(text(_THIS_BATCHS_REJECTS_SQL), params).mappings().all()
    if counts.rejected:  # once committed: the line says they are kept
        log.warning("%s: %s", account.title, rejects_line(counts.rejected, named, run_id))
    log.debug("%s: run %s batch to page %s committed: %s", account.title, run_id, last_page, counts)
    return counts


REJECTS_NAMED = 5  # per transaction in the log; every reject is in the rejects table

# The rejects this transaction wrote: created_at defaults to now(), the transaction's start time.
_THIS_BATCHS_REJECTS_SQL = f"""
SELECT page, emag_id, sku, reason FROM {_qualified(sync_rejects.name)}
WHERE run_id = :run_id AND created_at = now() ORDER BY id LIMIT :limit
"""


def rejects_line(rejected: int, named: Sequence[Mapping[Any, Any]], run_id: int) -> str:
    """One log line for a transaction's rejects: the first few by page, id, SKU and reason (the reason
    names the field and quotes the value as text), the rest counted."""

    def one(reject: Mapping[Any, Any]) -> str:
        where = [f"page {reject['page']}" if reject["page"] not in (None, BY_ID) else "read by id"]
        where.append(f"id {reject['emag_id']}" if reject["emag_id"] is not None else "no id")
        sku = reject["sku"]
        where.append(
            ("SKU " + (repr(sku) if len(sku) <= 60 else repr(sku[:57]) + "...")) if sku else "no SKU"
        )
        return ", ".join(where) + ": " + " ".join(str(reject["reason"]).split())

    more = f" (+{rejected - len(named)} more)" if rejected > len(named) else ""
    noun = "record" if rejected == 1 else "records"
    listed = "; ".join(one(reject) for reject in named)
    return f"{rejected} {noun} rejected, kept in {_qualified(sync_rejects.name)} (run_id {run_id}): {listed}{more}"


# Active rows the run neither loaded nor rejected: a reject naming the row's SKU or its id is still a record
# eMAG returned (malformed this time, its old values kept).
_MISSING_SQL = f"""
SELECT t.sku, t.emag_id FROM {_qualified(products.name)} t
WHERE t.account = :account AND t.is_active
  AND NOT EXISTS (SELECT 1 FROM {_qualified(sync_seen.name)} v WHERE v.run_id = :run_id AND v.sku = t.sku)
  AND NOT EXISTS (
    SELECT 1 FROM {_qualified(sync_rejects.name)} r
    WHERE r.run_id = :run_id AND (r.sku = t.sku OR r.emag_id = t.emag_id::text)
  )
ORDER BY t.emag_id
"""


def missing_from_read(engine: Engine, run_id: int, account: Account) -> list[tuple[str, int]]:
    """(SKU, eMAG id) of the account's active products this run's read did not return."""
    with engine.connect() as conn:
        rows = conn.execute(text(_MISSING_SQL), {"run_id": run_id, "account": account.name}).all()
    return [(row.sku, row.emag_id) for row in rows]


def active_products(engine: Engine, account: Account) -> int:
    """How many products of the account are active now."""
    query = select(func.count()).where(products.c.account == account.name, products.c.is_active)
    with engine.connect() as conn:
        return int(conn.scalar(query) or 0)


def deactivate(engine: Engine, run_id: int, account: Account, skus: Sequence[str]) -> int:
    """Mark these products and their offers inactive (eMAG confirmed they are gone); returns how many.

    Never deletes; a row that comes back later is reactivated by ``load_batch``.
    """
    if not skus:
        return 0
    with engine.begin() as conn:
        lock_running_run(conn, run_id, account)
        done = 0
        for table in (products, offers):
            result = conn.execute(
                update(table)
                .where(table.c.account == account.name, table.c.is_active, table.c.sku.in_(list(skus)))
                .values(is_active=False, updated_at=func.now())
            )
            done = result.rowcount if table is products else done
    log.info("%s: run %s deactivated %s products eMAG confirmed gone", account.title, run_id, done)
    return done
