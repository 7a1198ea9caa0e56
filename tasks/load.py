"""Load one batch in ONE transaction: COPY to staging, then set-based upserts, rejects and run progress."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from psycopg import Connection as PgConnection
from psycopg import sql
from sqlalchemy import Connection, Engine, select, text, update

from emag_sync.errors import RunStateError
from emag_sync.schema import SCHEMA, offers, products, sync_rejects, sync_runs, sync_seen
from emag_sync.settings import AccountType
from tasks.transform import OFFER_COLUMNS, PAGE, PRODUCT_COLUMNS, REJECT_COLUMNS, BatchFrames

log = logging.getLogger(__name__)

RUNNING = "running"
# Per-transaction staging tables (ON COMMIT DROP): a rolled-back batch leaves nothing behind.
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


def _copy_frame(conn: Connection, table: str, frame: pd.DataFrame, extra: Sequence[Any] = ()) -> None:
    """COPY ``frame`` (plus constant leading values ``extra``) into ``table``, in conn's transaction."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, PgConnection)  # psycopg 3 everywhere (emag_sync.db)
    names = [*(() if not extra else ["run_id"]), *frame.columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(*table.split(".")), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    prefix = tuple(extra)
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in frame.itertuples(index=False, name=None):
            copy.write_row(prefix + row if prefix else row)


def _stage(conn: Connection, frames: BatchFrames) -> None:
    """Temporary copies of the batch with the target tables' column types."""
    conn.execute(
        text(
            f"CREATE TEMP TABLE {STAGE_PRODUCTS} ON COMMIT DROP AS "
            f"SELECT {_columns(PRODUCT_COLUMNS)}, NULL::integer AS {PAGE} "
            f"FROM {_qualified(products.name)} WITH NO DATA"
        )
    )
    conn.execute(
        text(
            f"CREATE TEMP TABLE {STAGE_OFFERS} ON COMMIT DROP AS "
            f"SELECT {_columns(OFFER_COLUMNS)} FROM {_qualified(offers.name)} WITH NO DATA"
        )
    )
    _copy_frame(conn, STAGE_PRODUCTS, frames.products[[*PRODUCT_COLUMNS, PAGE]])
    _copy_frame(conn, STAGE_OFFERS, frames.offers[OFFER_COLUMNS])


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
    RETURNING s.emag_id, s.sku, s.{PAGE}, s.raw_emag_data,
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

    ``counter`` names a column that the insert sets to 1 and every rewrite increments.
    """
    assignments = [f"{name} = EXCLUDED.{name}" for name in columns if name not in (*_KEY, counter)]
    assignments.append("updated_at = now()")
    if counter is not None:
        assignments.append(f"{counter} = t.{counter} + 1")
    return f"""
INSERT INTO {_qualified(table)} AS t ({_columns(columns)})
{select_sql}
ON CONFLICT ({_columns(_KEY)}) DO UPDATE SET {", ".join(assignments)}
WHERE t.content_hash IS DISTINCT FROM EXCLUDED.content_hash OR NOT t.is_active
RETURNING t.sku, (t.xmax = 0) AS inserted
"""


# Step 2. Products; unchanged rows are not rewritten (updated_at stays), a returning row is reactivated.
_PRODUCTS_SQL = _upsert_sql(
    products.name, PRODUCT_COLUMNS, f"SELECT {_columns(PRODUCT_COLUMNS)} FROM {STAGE_PRODUCTS}"
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
            _copy_frame(conn, _qualified(sync_rejects.name), frames.rejects[REJECT_COLUMNS], extra=[run_id])

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
