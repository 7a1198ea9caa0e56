"""Databases made before migrations (``create_all``, no version table): what revision 0001 holds, and the
check that adopts such a database at 0001 or refuses it, naming what differs, with nothing changed.

The literals below are revision 0001 as PostgreSQL shows it (``tests/test_migrations.py`` proves a database
migrated to 0001 reflects exactly them, so they cannot drift from the revision).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from sqlalchemy import Connection, text

from emag_sync.errors import SchemaVersionError

log = logging.getLogger(__name__)

SCHEMA = "app"


class Column(NamedTuple):
    """One column as pg_attribute has it."""

    name: str
    type: str  # format_type()
    not_null: bool
    identity: bool
    default: str | None  # pg_get_expr() of the default


COLUMNS: dict[str, tuple[Column, ...]] = {
    "emag_price_updates": (
        Column("id", "bigint", True, True, None),
        Column("requested_at", "timestamp with time zone", True, False, "now()"),
        Column("requested_by", "text", True, False, None),
        Column("source", "text", True, False, None),
        Column("flow_run_id", "text", False, False, None),
        Column("sku", "text", True, False, None),
        Column("account_type", "text", True, False, None),
        Column("emag_offer_id", "bigint", False, False, None),
        Column("currency", "text", False, False, None),
        Column("old_sale_price", "numeric(14,4)", False, False, None),
        Column("old_min_sale_price", "numeric(14,4)", False, False, None),
        Column("old_max_sale_price", "numeric(14,4)", False, False, None),
        Column("new_sale_price", "numeric(14,4)", False, False, None),
        Column("new_min_sale_price", "numeric(14,4)", False, False, None),
        Column("new_max_sale_price", "numeric(14,4)", False, False, None),
        Column("status", "text", True, False, None),
        Column("emag_response", "jsonb", False, False, None),
        Column("sent_entity", "jsonb", False, False, None),
        Column("sent_at", "timestamp with time zone", False, False, None),
        Column("answered_at", "timestamp with time zone", False, False, None),
        Column("emag_answer", "text", False, False, None),
        Column("emag_messages", "jsonb", False, False, None),
        Column("reread_at", "timestamp with time zone", False, False, None),
        Column("reread_source", "text", False, False, None),
        Column("reread_found", "text", False, False, None),
        Column("reread_prices", "jsonb", False, False, None),
        Column("large_change_allowed", "boolean", True, False, "false"),
    ),
    "emag_product_offers_v2": (
        Column("id", "bigint", True, True, None),
        Column("product_id", "bigint", True, False, None),
        Column("sku", "text", True, False, None),
        Column("account_type", "text", True, False, None),
        Column("emag_offer_id", "bigint", True, False, None),
        Column("price", "numeric(14,4)", False, False, None),
        Column("sale_price", "numeric(14,4)", False, False, None),
        Column("recommended_price", "numeric(14,4)", False, False, None),
        Column("min_sale_price", "numeric(14,4)", False, False, None),
        Column("max_sale_price", "numeric(14,4)", False, False, None),
        Column("currency", "text", False, False, None),
        Column("vat_id", "integer", False, False, None),
        Column("stock", "integer", False, False, None),
        Column("available_stock", "integer", False, False, None),
        Column("reserved_stock", "integer", False, False, None),
        Column("handling_time", "integer", False, False, None),
        Column("status", "smallint", False, False, None),
        Column("visibility", "text", False, False, None),
        Column("offer_validation_status", "smallint", False, False, None),
        Column("offer_validation_status_description", "text", False, False, None),
        Column("content_hash", "text", True, False, None),
        Column("is_active", "boolean", True, False, "true"),
        Column("prices_pushed_at", "timestamp with time zone", False, False, None),
        Column("sync_attempts", "integer", True, False, "0"),
        Column("last_synced_at", "timestamp with time zone", True, False, None),
        Column("created_at", "timestamp with time zone", True, False, "now()"),
        Column("updated_at", "timestamp with time zone", True, False, "now()"),
    ),
    "emag_products_v2": (
        Column("id", "bigint", True, True, None),
        Column("sku", "text", True, False, None),
        Column("account_type", "text", True, False, None),
        Column("emag_id", "bigint", True, False, None),
        Column("part_number_key", "text", False, False, None),
        Column("name", "text", False, False, None),
        Column("brand", "text", False, False, None),
        Column("category_id", "bigint", False, False, None),
        Column("ean", "text[]", False, False, None),
        Column("url", "text", False, False, None),
        Column("images", "jsonb", False, False, None),
        Column("family_id", "bigint", False, False, None),
        Column("family_name", "text", False, False, None),
        Column("validation_status", "smallint", False, False, None),
        Column("validation_status_description", "text", False, False, None),
        Column("translation_validation_status", "smallint", False, False, None),
        Column("ownership", "smallint", False, False, None),
        Column("genius_eligibility", "smallint", False, False, None),
        Column("number_of_offers", "integer", False, False, None),
        Column("buy_button_rank", "integer", False, False, None),
        Column("best_offer_sale_price", "numeric(14,4)", False, False, None),
        Column("gpsr_manufacturer", "boolean", False, False, None),
        Column("gpsr_eu_representative", "boolean", False, False, None),
        Column("raw_emag_data", "jsonb", True, False, None),
        Column("content_hash", "text", True, False, None),
        Column("is_active", "boolean", True, False, "true"),
        Column("last_synced_at", "timestamp with time zone", True, False, None),
        Column("created_at", "timestamp with time zone", True, False, "now()"),
        Column("updated_at", "timestamp with time zone", True, False, "now()"),
    ),
    "emag_sync_rejects": (
        Column("id", "bigint", True, True, None),
        Column("run_id", "bigint", True, False, None),
        Column("account_type", "text", True, False, None),
        Column("page", "integer", False, False, None),
        Column("emag_id", "text", False, False, None),
        Column("sku", "text", False, False, None),
        Column("reason", "text", True, False, None),
        Column("raw_payload", "jsonb", True, False, None),
        Column("created_at", "timestamp with time zone", True, False, "now()"),
    ),
    "emag_sync_runs": (
        Column("id", "bigint", True, True, None),
        Column("account_type", "text", True, False, None),
        Column("flow_run_id", "text", False, False, None),
        Column("status", "text", True, False, None),
        Column("started_at", "timestamp with time zone", True, False, "now()"),
        Column("finished_at", "timestamp with time zone", False, False, None),
        Column("duration_seconds", "numeric(12,3)", False, False, None),
        Column("items_per_page", "integer", True, False, None),
        Column("pages_per_batch", "integer", True, False, None),
        Column("expected_items", "integer", False, False, None),
        Column("expected_pages", "integer", False, False, None),
        Column("last_committed_page", "integer", True, False, "0"),
        Column("pages_read", "integer", True, False, "0"),
        Column("batches_committed", "integer", True, False, "0"),
        Column("records_read", "integer", True, False, "0"),
        Column("records_loaded", "integer", True, False, "0"),
        Column("duplicates_skipped", "integer", True, False, "0"),
        Column("rows_inserted", "integer", True, False, "0"),
        Column("rows_updated", "integer", True, False, "0"),
        Column("rows_unchanged", "integer", True, False, "0"),
        Column("rows_rejected", "integer", True, False, "0"),
        Column("rows_deactivated", "integer", True, False, "0"),
        Column("api_requests", "integer", True, False, "0"),
        Column("rate_limited", "integer", True, False, "0"),
        Column("retries", "integer", True, False, "0"),
        Column("resumed_count", "integer", True, False, "0"),
        Column("dq_status", "text", False, False, None),
        Column("dq_results", "jsonb", False, False, None),
        Column("error", "text", False, False, None),
    ),
    "emag_sync_seen": (
        Column("run_id", "bigint", True, False, None),
        Column("emag_id", "bigint", True, False, None),
        Column("sku", "text", True, False, None),
    ),
}
# Indexes that back no constraint, as pg_indexes shows them.
INDEXES: dict[str, str] = {
    "emag_price_updates_sku": "CREATE INDEX emag_price_updates_sku ON app.emag_price_updates USING btree (account_type, sku)",
    "emag_product_offers_v2_offer_id": "CREATE INDEX emag_product_offers_v2_offer_id ON app.emag_product_offers_v2 USING btree (account_type, emag_offer_id)",
    "emag_product_offers_v2_product_id": "CREATE INDEX emag_product_offers_v2_product_id ON app.emag_product_offers_v2 USING btree (product_id)",
    "emag_product_offers_v2_pushed": "CREATE INDEX emag_product_offers_v2_pushed ON app.emag_product_offers_v2 USING btree (account_type, prices_pushed_at) WHERE (prices_pushed_at IS NOT NULL)",
    "emag_sync_rejects_run": "CREATE INDEX emag_sync_rejects_run ON app.emag_sync_rejects USING btree (run_id)",
    "emag_sync_runs_account_started": "CREATE INDEX emag_sync_runs_account_started ON app.emag_sync_runs USING btree (account_type, started_at)",
    "emag_sync_runs_flow_run": "CREATE INDEX emag_sync_runs_flow_run ON app.emag_sync_runs USING btree (flow_run_id)",
}
# Constraints other than NOT NULL: (table, name) -> pg_get_constraintdef.
CONSTRAINTS: dict[tuple[str, str], str] = {
    (
        "emag_price_updates",
        "emag_price_updates_account_type",
    ): "CHECK ((account_type = ANY (ARRAY['main'::text, 'fbe'::text])))",
    ("emag_price_updates", "emag_price_updates_pkey"): "PRIMARY KEY (id)",
    (
        "emag_product_offers_v2",
        "emag_product_offers_v2_account_type",
    ): "CHECK ((account_type = ANY (ARRAY['main'::text, 'fbe'::text])))",
    ("emag_product_offers_v2", "emag_product_offers_v2_pkey"): "PRIMARY KEY (id)",
    (
        "emag_product_offers_v2",
        "emag_product_offers_v2_product_id_fkey",
    ): "FOREIGN KEY (product_id) REFERENCES app.emag_products_v2(id) ON DELETE RESTRICT",
    ("emag_product_offers_v2", "emag_product_offers_v2_sku_account"): "UNIQUE (sku, account_type)",
    (
        "emag_products_v2",
        "emag_products_v2_account_type",
    ): "CHECK ((account_type = ANY (ARRAY['main'::text, 'fbe'::text])))",
    ("emag_products_v2", "emag_products_v2_pkey"): "PRIMARY KEY (id)",
    ("emag_products_v2", "emag_products_v2_sku_account"): "UNIQUE (sku, account_type)",
    ("emag_sync_rejects", "emag_sync_rejects_pkey"): "PRIMARY KEY (id)",
    (
        "emag_sync_rejects",
        "emag_sync_rejects_run_id_fkey",
    ): "FOREIGN KEY (run_id) REFERENCES app.emag_sync_runs(id) ON DELETE CASCADE",
    (
        "emag_sync_runs",
        "emag_sync_runs_account_type",
    ): "CHECK ((account_type = ANY (ARRAY['main'::text, 'fbe'::text])))",
    ("emag_sync_runs", "emag_sync_runs_pkey"): "PRIMARY KEY (id)",
    ("emag_sync_seen", "emag_sync_seen_pkey"): "PRIMARY KEY (run_id, emag_id)",
    ("emag_sync_seen", "emag_sync_seen_run_sku"): "UNIQUE (run_id, sku)",
}

# Left by emag-sync versions before 2026-11-28, which today's create_all no longer makes (each was paid on
# every insert of a first load); adopting drops them, as nothing reads them.
LEFTOVER_INDEXES = frozenset({"emag_products_v2_emag_id"})
LEFTOVER_CONSTRAINTS = frozenset({("emag_sync_seen", "emag_sync_seen_run_id_fkey")})

_COLUMNS_SQL = text(
    """
SELECT c.relname AS table_name, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null, a.attidentity <> '' AS identity, pg_get_expr(d.adbin, d.adrelid) AS "default"
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = :schema AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relname = ANY(:tables)
ORDER BY c.relname, a.attnum
"""
)
_INDEXES_SQL = text(
    """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = :schema AND i.tablename = ANY(:tables)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conname = i.indexname AND k.connamespace = CAST(:schema AS regnamespace))
"""
)
_CONSTRAINTS_SQL = text(
    """
SELECT r.relname AS table_name, k.conname AS name, pg_get_constraintdef(k.oid) AS definition
FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid
WHERE k.connamespace = CAST(:schema AS regnamespace) AND r.relname = ANY(:tables) AND k.contype <> 'n'
"""
)


def app_tables(conn: Connection) -> list[str]:
    """The tables of revision 0001 that schema ``app`` holds (a user's own tables there are not counted)."""
    rows = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": SCHEMA})
    return sorted(set(rows.scalars()) & set(COLUMNS))


def differences(conn: Connection) -> tuple[list[str], list[str]]:
    """What differs from revision 0001: (what adopting cannot fix, the statements that complete it).

    Completed as earlier versions did on start: a missing column that is nullable or has a default (added
    with its type and default), a missing index, and the known leftovers of earlier versions (dropped).
    """
    tables = list(COLUMNS)
    params = {"schema": SCHEMA, "tables": tables}
    found: dict[str, dict[str, Column]] = {}
    for row in conn.execute(_COLUMNS_SQL, params):
        found.setdefault(row.table_name, {})[row.name] = Column(
            row.name, row.type, row.not_null, row.identity, row.default
        )
    problems: list[str] = []
    fixes: list[str] = []
    for table, columns in COLUMNS.items():
        have = found.get(table)
        if have is None:
            problems.append(f"table {SCHEMA}.{table} is missing")
            continue
        wanted = {column.name: column for column in columns}
        for column in columns:
            actual = have.get(column.name)
            if actual is None:
                if column.identity or (column.not_null and column.default is None):
                    problems.append(f"{SCHEMA}.{table} lacks column {column.name}")
                else:
                    fixes.append(_add_column(table, column))
            elif actual != column:
                problems.append(f"{SCHEMA}.{table}.{column.name} is {_shown(actual)}, not {_shown(column)}")
        problems += [
            f"{SCHEMA}.{table} has column {name}, which revision 0001 does not"
            for name in have
            if name not in wanted
        ]
    if problems:
        return problems, []
    indexes: dict[str, str] = {row.indexname: row.indexdef for row in conn.execute(_INDEXES_SQL, params)}
    fixes += [f"DROP INDEX {SCHEMA}.{name}" for name in sorted(LEFTOVER_INDEXES & indexes.keys())]
    for name, definition in INDEXES.items():
        if name not in indexes:
            fixes.append(definition)
        elif indexes[name] != definition:
            problems.append(f"index {name} is {indexes[name]!r}, not {definition!r}")
    problems += [
        f"{SCHEMA} has index {name}, which revision 0001 does not"
        for name in sorted(indexes.keys() - INDEXES.keys() - LEFTOVER_INDEXES)
    ]
    constraints = {
        (row.table_name, row.name): row.definition for row in conn.execute(_CONSTRAINTS_SQL, params)
    }
    for (table, name), definition in CONSTRAINTS.items():
        if constraints.get((table, name)) != definition:
            problems.append(f"{SCHEMA}.{table} lacks constraint {name} ({definition})")
    for table, name in sorted(constraints.keys() - CONSTRAINTS.keys()):
        if (table, name) in LEFTOVER_CONSTRAINTS:
            fixes.append(f"ALTER TABLE {SCHEMA}.{table} DROP CONSTRAINT {name}")
        else:
            problems.append(f"{SCHEMA}.{table} has constraint {name}, which revision 0001 does not")
    return problems, fixes


def adopt(conn: Connection) -> None:
    """Check a database made before migrations against revision 0001 and complete it, in the caller's
    transaction; SchemaVersionError (one line, naming what differs) and nothing changed otherwise."""
    problems, fixes = differences(conn)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SchemaVersionError(
            f"schema {SCHEMA} has emag-sync's tables but no version table, and they match no known revision "
            f"({shown}); nothing was changed"
        )
    for statement in fixes:
        conn.execute(text(statement))
        log.info("database: %s (completing a schema made by an earlier version)", statement)


def _add_column(table: str, column: Column) -> str:
    default = f" DEFAULT {column.default}" if column.default is not None else ""
    not_null = " NOT NULL" if column.not_null else ""
    return f'ALTER TABLE {SCHEMA}.{table} ADD COLUMN "{column.name}" {column.type}{default}{not_null}'


def _shown(column: Column) -> str:
    parts = [column.type, "not null" if column.not_null else "nullable"]
    if column.identity:
        parts.append("identity")
    if column.default is not None:
        parts.append(f"default {column.default}")
    return " ".join(parts)
