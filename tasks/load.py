"""Load one batch in ONE transaction: COPY to staging, then set-based upserts, rejects and run progress."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from emag_sync.errors import RunStateError
from emag_sync.schema import SCHEMA, offers, products, sync_rejects, sync_runs, sync_seen
from emag_sync.settings import AccountType
from tasks.transform import OFFER_COLUMNS, PAGE, PRODUCT_COLUMNS, REJECT_COLUMNS, BatchFrames

log = logging.getLogger(__name__)

RUNNING = "running"
# Session-lived staging tables emptied at every commit (ON COMMIT DELETE ROWS), so a batch never sees
# another's rows and a rolled-back batch leaves nothing behind. Created once per connection, not in every
# batch: creating and dropping them wrote the catalogue twice per batch (~5% of a first load's time).
STAGE_PRODUCTS = "emag_stage_products"
STAGE_OFFERS = "emag_stage_offers"
_KEY = ("sku", "account_type")


@dataclass(frozen=True)
class BatchResult:
    """What one batch did, counted per record (a product and its offer are one record).

    ``updated`` is a record whose product or offer changed; ``duplicates`` are records already loaded
    earlier in this run or repeated inside the batch; ``rejected`` includes the transform's rejects.
    """

    inserted: int
    updated: int
    unchanged: int
    rejected: int
    duplicates: int


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
_PAGE_COLUMN = Column(PAGE, Integer)
_STAGED = {
    STAGE_PRODUCTS: [*(products.c[name] for name in PRODUCT_COLUMNS), _PAGE_COLUMN],
    STAGE_OFFERS: [offers.c[name] for name in OFFER_COLUMNS],
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
    INSERT INTO {_qualified(sync_rejects.name)} (run_id, account_type, page, emag_id, sku, reason, raw_payload)
    SELECT :run_id, :account, {PAGE}, emag_id::text, sku,
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
    """INSERT ... ON CONFLICT (sku, account_type) that rewrites a row only when its content changed.

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
    WHERE same.sku = s.sku AND same.account_type = s.account_type AND same.is_active
)
ON CONFLICT ({_columns(_KEY)}) DO UPDATE SET {", ".join(assignments)}
WHERE t.content_hash IS DISTINCT FROM EXCLUDED.content_hash OR NOT t.is_active
RETURNING t.sku, (t.xmax = 0) AS inserted
"""


# Step 2. Products; unchanged rows are not rewritten (updated_at stays), a returning row is reactivated.
_PRODUCTS_SQL = _upsert_sql(
    products.name,
    PRODUCT_COLUMNS,
    "SELECT "
    + ", ".join(f"s.{name}::jsonb" if _is_json(name) else f"s.{name}" for name in PRODUCT_COLUMNS)
    + f" FROM {STAGE_PRODUCTS} s",
)
# Step 3. Offers, joined to their product for product_id; sync_attempts counts the writes of a row.
_OFFERS_SQL = _upsert_sql(
    offers.name,
    [offers.c.product_id.name, *OFFER_COLUMNS, offers.c.sync_attempts.name],
    f"""SELECT p.id, {_columns(OFFER_COLUMNS, "s.")}, 1
FROM {STAGE_OFFERS} s
JOIN {STAGE_PRODUCTS} fresh ON fresh.sku = s.sku
JOIN {_qualified(products.name)} p ON p.sku = s.sku AND p.account_type = s.account_type""",
    counter=offers.c.sync_attempts.name,
)


def _lock_running_run(conn: Connection, run_id: int, account: AccountType) -> None:
    """The run must exist, be this account's and be running; its row stays locked to the commit."""
    row = conn.execute(
        select(sync_runs.c.account_type, sync_runs.c.status).where(sync_runs.c.id == run_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise RunStateError(f"{account.label}: sync run {run_id} does not exist")
    if row.account_type != account.value or row.status != RUNNING:
        raise RunStateError(
            f"{account.label}: sync run {run_id} is a {row.account_type.upper()} run with status "
            f"{row.status!r}; only a running run of this account can take batches"
        )


def load_batch(
    engine: Engine,
    run_id: int,
    account: AccountType,
    frames: BatchFrames,
    *,
    last_page: int,
    api_requests: int = 0,
    rate_limited: int = 0,
    retries: int = 0,
    _between: Callable[[Connection], None] | None = None,
) -> BatchResult:
    """Upsert a batch's products and offers, its rejects and the run's progress in ONE transaction.

    ``api_requests``, ``rate_limited`` and ``retries`` are this batch's increments (they are added to the
    run's totals, so a resumed run keeps counting). ``_between`` is a TEST-ONLY hook called between the
    products and offers statements, to prove that a failure there leaves the whole batch absent.
    """
    with engine.begin() as conn:
        _lock_running_run(conn, run_id, account)
        _stage(conn, frames)
        seen = conn.execute(text(_SEEN_SQL), {"run_id": run_id, "account": account.value}).one()
        written = conn.execute(text(_PRODUCTS_SQL)).all()
        if _between is not None:
            _between(conn)
        offers_written = {row.sku for row in conn.execute(text(_OFFERS_SQL))}
        if len(frames.rejects):
            _copy_rejects(conn, run_id, frames.rejects)

        inserted = {row.sku for row in written if row.inserted}
        updated = ({row.sku for row in written} | offers_written) - inserted
        result = BatchResult(
            inserted=len(inserted),
            updated=len(updated),
            unchanged=seen.fresh - len(inserted) - len(updated),
            rejected=len(frames.rejects) + seen.rejected,
            duplicates=frames.duplicates + seen.duplicates,
        )
        c = sync_runs.c
        conn.execute(
            update(sync_runs)
            .where(c.id == run_id)
            .values(
                last_committed_page=last_page,
                batches_committed=c.batches_committed + 1,
                records_read=c.records_read + frames.records,
                records_loaded=c.records_loaded + seen.fresh,
                duplicates_skipped=c.duplicates_skipped + result.duplicates,
                rows_inserted=c.rows_inserted + result.inserted,
                rows_updated=c.rows_updated + result.updated,
                rows_unchanged=c.rows_unchanged + result.unchanged,
                rows_rejected=c.rows_rejected + result.rejected,
                api_requests=c.api_requests + api_requests,
                rate_limited=c.rate_limited + rate_limited,
                retries=c.retries + retries,
            )
        )
    log.debug("%s: run %s batch to page %s committed: %s", account.label, run_id, last_page, result)
    return result


# Rows the run neither loaded nor rejected (a reject with a SKU is still a record eMAG returned).
_DEACTIVATE_SQL = """
UPDATE {table} t SET is_active = false, updated_at = now()
WHERE t.account_type = :account AND t.is_active
  AND NOT EXISTS (SELECT 1 FROM {seen} v WHERE v.run_id = :run_id AND v.sku = t.sku)
  AND NOT EXISTS (SELECT 1 FROM {rejects} r WHERE r.run_id = :run_id AND r.sku = t.sku)
"""


def deactivate_missing(engine: Engine, run_id: int, account: AccountType) -> int:
    """After a COMPLETE read: mark the account's products and offers eMAG no longer returned inactive.

    Never deletes; a row that comes back later is reactivated by ``load_batch``. Returns the number of
    products deactivated. Call it only after the last page; a partial read would deactivate the rest.
    """
    names = {"seen": _qualified(sync_seen.name), "rejects": _qualified(sync_rejects.name)}
    params = {"run_id": run_id, "account": account.value}
    with engine.begin() as conn:
        _lock_running_run(conn, run_id, account)
        gone = conn.execute(text(_DEACTIVATE_SQL.format(table=_qualified(products.name), **names)), params)
        conn.execute(text(_DEACTIVATE_SQL.format(table=_qualified(offers.name), **names)), params)
    log.info(
        "%s: run %s deactivated %s products eMAG no longer returns", account.label, run_id, gone.rowcount
    )
    return gone.rowcount
