"""Every table, key, column type and column list, declared once; transform, load, checks and prices import them."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from emag_sync.accounts import AccountType
from emag_sync.limits import PRICE_DECIMALS
from emag_sync.platforms import PLATFORMS

SCHEMA = "app"
# eMAG prices are ex-VAT with up to 4 decimals; 14 digits cover HUF catalogues too.
MONEY_DIGITS = 14
Money = Numeric(MONEY_DIGITS, PRICE_DECIMALS)
# The first amount a money column cannot hold.
MAX_MONEY = Decimal(10) ** (MONEY_DIGITS - PRICE_DECIMALS)
# A btree index entry holds at most 2,704 bytes (a third of an 8 kB page), and part_number is a key of
# the catalogue's unique (sku, account) and of the seen set's (run_id, sku). eMAG documents it as 1-25
# characters: 1 kB of UTF-8 leaves room for any real one and keeps every key far below PostgreSQL's limit.
MAX_SKU_BYTES = 1024
# The raw JSON columns hold records at most this many levels deep (eMAG's are 4): orjson writes no deeper,
# and JSONB much deeper than Python's recursion limit could not even be read back through psycopg.
MAX_JSON_DEPTH = 255
ACCOUNT_TYPES = tuple(account.value for account in AccountType)

metadata = MetaData(schema=SCHEMA)


def _timestamps() -> list[Column[object]]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


def _account_check(table: str) -> CheckConstraint:
    return CheckConstraint(f"account_type IN {ACCOUNT_TYPES!r}", name=f"{table}_account_type")


# The account registry: an account is a row, found by its name everywhere (every table below carries it).
# No credential is ever stored here: they are found by the name (EMAG_<NAME>_USERNAME, Secret blocks).
ACCOUNT_NAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
PLATFORM_CODES = tuple(PLATFORMS)
accounts = Table(
    "emag_accounts",
    metadata,
    Column("name", Text, primary_key=True, comment="a slug such as ro-fbe or acme-bg-main"),
    Column("seller", Text, comment="free text, for grouping (an integrator's client)"),
    Column("platform", Text, nullable=False, comment=", ".join(PLATFORM_CODES)),
    Column("kind", Text, nullable=False, comment="main or fbe"),
    Column("api_url", Text, comment="overrides the platform's API URL (a proxy, the sandbox)"),
    Column("requests_per_second", Numeric(8, 3), nullable=False, server_default="3"),
    Column("enabled", Boolean, nullable=False, server_default="true"),
    Column("removed_at", DateTime(timezone=True), comment="set by `accounts remove --keep-data`"),
    *_timestamps(),
    CheckConstraint(f"name ~ '{ACCOUNT_NAME_PATTERN}'", name="emag_accounts_name"),
    CheckConstraint(f"platform IN {PLATFORM_CODES!r}", name="emag_accounts_platform"),
    CheckConstraint(f"kind IN {ACCOUNT_TYPES!r}", name="emag_accounts_kind"),
    CheckConstraint("requests_per_second > 0", name="emag_accounts_requests_per_second"),
)


def _account_column(*, registered: bool = False) -> Column[str]:
    """The account's name. ``registered``: a foreign key to the registry, on the tables written a row at a
    time (runs, price updates); the catalogue tables skip it, as a check per row of a first load costs more
    than it guards (only a run of a registered account writes them)."""
    if registered:
        return Column(
            "account", Text, ForeignKey(accounts.c.name, onupdate="CASCADE"), nullable=False,
            comment="the account's name (app.emag_accounts)",
        )  # fmt: skip
    return Column("account", Text, nullable=False, comment="the account's name (app.emag_accounts)")


products = Table(
    "emag_products_v2",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("sku", Text, nullable=False, comment="the record's part_number"),
    Column("account_type", Text, nullable=False, comment="the account's kind: main or fbe"),
    _account_column(),
    Column("emag_id", BigInteger, nullable=False, comment="the record's id (seller's internal product id)"),
    Column("part_number_key", Text),
    Column("name", Text),
    Column("brand", Text),
    Column("category_id", BigInteger),
    Column("ean", ARRAY(Text)),
    Column("url", Text),
    Column("images", JSONB),
    Column("family_id", BigInteger),
    Column("family_name", Text),
    Column("validation_status", SmallInteger),
    Column("validation_status_description", Text),
    Column("translation_validation_status", SmallInteger),
    Column("ownership", SmallInteger),
    Column("genius_eligibility", SmallInteger),
    Column("number_of_offers", Integer),
    Column("buy_button_rank", Integer),
    Column("best_offer_sale_price", Money),
    # GPSR: eMAG answers a boolean on a plain read and a list of objects when filtered by product.
    Column("gpsr_manufacturer", Boolean, comment="manufacturer details present on eMAG"),
    Column("gpsr_eu_representative", Boolean, comment="EU representative details present on eMAG"),
    Column("raw_emag_data", JSONB, nullable=False, comment="the record as received, every value as sent"),
    Column(
        "content_hash", Text, nullable=False, comment="md5 of the loaded fields: unchanged rows are skipped"
    ),
    Column("is_active", Boolean, nullable=False, server_default="true"),
    Column("last_synced_at", DateTime(timezone=True), nullable=False),
    *_timestamps(),
    UniqueConstraint("sku", "account", name="emag_products_v2_sku_account"),
    # No index on emag_id here: the offer row carries the same id (emag_offer_id, indexed), and every index
    # is paid on each insert of a first load.
    _account_check("emag_products_v2"),
)

offers = Table(
    "emag_product_offers_v2",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("product_id", BigInteger, ForeignKey(products.c.id, ondelete="RESTRICT"), nullable=False),
    Column("sku", Text, nullable=False),
    Column("account_type", Text, nullable=False, comment="the account's kind: main or fbe"),
    _account_column(),
    Column("emag_offer_id", BigInteger, nullable=False, comment="the record's id: what offer/save takes"),
    Column("price", Money, comment="current selling price ex-VAT (= sale_price)"),
    Column("sale_price", Money),
    Column("recommended_price", Money),
    Column("min_sale_price", Money),
    Column("max_sale_price", Money),
    Column("currency", Text),
    Column("vat_id", Integer),
    Column("stock", Integer, comment="general_stock"),
    Column("available_stock", Integer, comment="estimated_stock"),
    Column("reserved_stock", Integer, comment="general_stock - estimated_stock, never below 0"),
    Column("handling_time", Integer),
    Column("status", SmallInteger, comment="0 inactive, 1 active, 2 end of life"),
    Column("visibility", Text, comment="'visible' when sellable per eMAG's rule, else 'hidden'"),
    Column("offer_validation_status", SmallInteger),
    Column("offer_validation_status_description", Text),
    Column("content_hash", Text, nullable=False),
    Column("is_active", Boolean, nullable=False, server_default="true"),
    Column(
        "prices_pushed_at",
        DateTime(timezone=True),
        comment="when eMAG confirmed the latest price update sent from here: a sync page read earlier "
        "never overwrites those prices",
    ),
    Column(
        "stock_pushed_at",
        DateTime(timezone=True),
        comment="when eMAG confirmed the latest stock update sent from here: a sync page read earlier "
        "never overwrites that stock",
    ),
    Column(
        "sync_attempts",
        Integer,
        nullable=False,
        server_default="0",
        comment="syncs that wrote this row (insert or change)",
    ),
    Column("last_synced_at", DateTime(timezone=True), nullable=False),
    *_timestamps(),
    UniqueConstraint("sku", "account", name="emag_product_offers_v2_sku_account"),
    Index("emag_product_offers_v2_offer_id", "account", "emag_offer_id"),
    # Only the few offers with a price pushed from here: the load's check for them costs nothing otherwise.
    Index(
        "emag_product_offers_v2_pushed",
        "account",
        "prices_pushed_at",
        postgresql_where=text("prices_pushed_at IS NOT NULL"),
    ),
    Index(
        "emag_product_offers_v2_stock_pushed",
        "account",
        "stock_pushed_at",
        postgresql_where=text("stock_pushed_at IS NOT NULL"),
    ),
    Index("emag_product_offers_v2_product_id", "product_id"),
    _account_check("emag_product_offers_v2"),
)

sync_runs = Table(
    "emag_sync_runs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("account_type", Text, nullable=False, comment="the account's kind: main or fbe"),
    _account_column(registered=True),
    Column("flow_run_id", Text, comment="Prefect flow run; a retry of the same flow run resumes this row"),
    Column("status", Text, nullable=False, comment="running, succeeded, failed, abandoned"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_seconds", Numeric(12, 3)),
    Column("items_per_page", Integer, nullable=False),
    Column("pages_per_batch", Integer, nullable=False),
    Column("expected_items", Integer, comment="product_offer/count noOfItems at the start"),
    Column("expected_pages", Integer),
    Column(
        "last_committed_page",
        Integer,
        nullable=False,
        server_default="0",
        comment="the page of the last committed batch: a resumed attempt starts after it",
    ),
    Column(
        "pages_read", Integer, nullable=False, server_default="0", comment="pages the run's read committed"
    ),
    Column("batches_committed", Integer, nullable=False, server_default="0"),
    Column("records_read", Integer, nullable=False, server_default="0"),
    Column(
        "records_loaded",
        Integer,
        nullable=False,
        server_default="0",
        comment="distinct records loaded (the run's seen set, kept after it is cleaned): DQ completeness",
    ),
    Column("duplicates_skipped", Integer, nullable=False, server_default="0"),
    Column("rows_inserted", Integer, nullable=False, server_default="0"),
    Column("rows_updated", Integer, nullable=False, server_default="0"),
    Column("rows_unchanged", Integer, nullable=False, server_default="0"),
    Column("rows_rejected", Integer, nullable=False, server_default="0"),
    Column("rows_deactivated", Integer, nullable=False, server_default="0"),
    Column("api_requests", Integer, nullable=False, server_default="0"),
    Column("rate_limited", Integer, nullable=False, server_default="0", comment="429 answers received"),
    Column("retries", Integer, nullable=False, server_default="0"),
    Column("resumed_count", Integer, nullable=False, server_default="0"),
    Column("dq_status", Text, comment="passed, warning, failed; null until checked"),
    Column("dq_results", JSONB),
    Column("error", Text),
    _account_check("emag_sync_runs"),
    Index("emag_sync_runs_account_started", "account", "started_at"),
    Index("emag_sync_runs_flow_run", "flow_run_id"),
)

sync_rejects = Table(
    "emag_sync_rejects",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("run_id", BigInteger, ForeignKey(sync_runs.c.id, ondelete="CASCADE"), nullable=False),
    Column("account_type", Text, nullable=False, comment="the account's kind: main or fbe"),
    _account_column(),
    Column("page", Integer),
    Column("emag_id", Text, comment="as sent, may be unparsable"),
    Column("sku", Text),
    Column("reason", Text, nullable=False),
    Column(
        "raw_payload",
        JSONB,
        nullable=False,
        comment="the record as received; one JSONB cannot hold as an object (a NUL, a lone surrogate, deeper "
        f"than {MAX_JSON_DEPTH} levels, or JSON Python cannot parse) is kept as its JSON text, in a JSON string",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("emag_sync_rejects_run", "run_id"),
)

# Records seen by a run, keyed like the catalogue: de-duplicates pages that shifted under offset paging,
# and tells deactivation which rows eMAG still returned. Written in the batch's own transaction, which has
# locked its run row first; no foreign key, as a per-row check on the hottest insert of a first load costs
# more than it guards (tasks.runs deletes a run's rows when it finishes or is abandoned).
sync_seen = Table(
    "emag_sync_seen",
    metadata,
    Column("run_id", BigInteger, primary_key=True),
    Column("emag_id", BigInteger, primary_key=True),
    Column("sku", Text, nullable=False),
    UniqueConstraint("run_id", "sku", name="emag_sync_seen_run_sku"),
)

# The offer updates sent from here, prices and stock alike (``kind``): one intent, answer, re-read and
# status per update. The table keeps its first name, which scripts and earlier versions read.
UPDATE_KINDS = ("price", "stock")
price_updates = Table(
    "emag_price_updates",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("kind", Text, nullable=False, server_default="price", comment="price or stock"),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("requested_by", Text, nullable=False, comment="OS user or Prefect flow run that asked"),
    Column("source", Text, nullable=False, comment="cli, cli-bulk, flow"),
    Column("flow_run_id", Text),
    Column("sku", Text, nullable=False),
    Column("account_type", Text, nullable=False, comment="the account's kind: main or fbe"),
    _account_column(registered=True),
    Column("emag_offer_id", BigInteger),
    Column("currency", Text),
    Column("old_sale_price", Money),
    Column("old_min_sale_price", Money),
    Column("old_max_sale_price", Money),
    Column("new_sale_price", Money),
    Column("new_min_sale_price", Money),
    Column("new_max_sale_price", Money),
    Column(
        "status",
        Text,
        nullable=False,
        comment="sending (intent written, no outcome yet), applied, refused, not-applied, uncertain",
    ),
    Column("emag_response", JSONB),
    # Written before the request (status sending), completed after it: a run killed in between leaves
    # the intent visible, and the next price or stock run, or a sync, reconciles it by reading eMAG.
    Column("sent_entity", JSONB, comment="the offer/save entity sent: id and the price fields asked for"),
    Column("sent_at", DateTime(timezone=True), comment="when the intent was committed, just before sending"),
    Column("answered_at", DateTime(timezone=True), comment="when eMAG's answer (or the failure) arrived"),
    Column("emag_answer", Text, comment="accepted, refused, no-answer; null while sending"),
    Column("emag_messages", JSONB, comment="eMAG's messages for this offer's request"),
    Column("reread_at", DateTime(timezone=True), comment="when eMAG's prices were read back"),
    Column("reread_source", Text, comment="save (right after it), reconcile (a later price run), sync"),
    Column(
        "reread_found", Text, comment="new prices, old prices, same prices, other prices, not found, failed"
    ),
    Column("reread_prices", JSONB, comment="the price fields eMAG held at reread_at"),
    Column(
        "large_change_allowed",
        Boolean,
        nullable=False,
        server_default="false",
        comment="the sale price moved by more than EMAG_MAX_PRICE_CHANGE and the operator allowed it",
    ),
    Column("warehouse_id", Integer, comment="stock updates: the warehouse whose stock was set"),
    Column("old_stock", Integer, comment="stock updates: the warehouse's stock on eMAG before"),
    Column("new_stock", Integer, comment="stock updates: the stock asked for"),
    Column("reread_stock", Integer, comment="stock updates: the warehouse's stock eMAG held at reread_at"),
    Column(
        "mass_zero_allowed",
        Boolean,
        nullable=False,
        server_default="false",
        comment="part of a bulk setting more than EMAG_MAX_ZERO_STOCK_SHARE of the offers to 0, allowed",
    ),
    _account_check("emag_price_updates"),
    CheckConstraint(f"kind IN {UPDATE_KINDS!r}", name="emag_price_updates_kind"),
    Index("emag_price_updates_sku", "account", "sku"),
)


# --- column lists: what the transform produces and the load stages ---------------------------------

# The source page of each record travels with the products frame (for rejects found at load time), and
# when that page was read with the offers frame (a price pushed and confirmed later wins over the page).
PAGE = sync_rejects.c.page.name
READ_AT = "read_at"
# Columns that do not come from eMAG's record: the database fills them, or a price update does.
_NOT_FROM_EMAG = {
    "id", "product_id", "created_at", "updated_at", "sync_attempts", "prices_pushed_at", "stock_pushed_at",
}  # fmt: skip
PRODUCT_COLUMNS = [c.name for c in products.columns if c.name not in _NOT_FROM_EMAG]
OFFER_COLUMNS = [c.name for c in offers.columns if c.name not in _NOT_FROM_EMAG]
REJECT_COLUMNS = [c.name for c in sync_rejects.columns if c.name not in {"id", "run_id", "created_at"}]
# The offer fields a price update writes (price mirrors sale_price).
PRICE_FIELDS = ("sale_price", "min_sale_price", "max_sale_price")
# The offer fields a stock update writes: general_stock, estimated_stock and their difference.
STOCK_FIELDS = ("stock", "available_stock", "reserved_stock")
