"""Today's schema (emag-sync before migrations).

Every table exactly as ``create_all`` made it.
A database created that way (no version table) is adopted at this revision by
``emag_sync.schema_version``, after checking its tables and columns against ``emag_sync.migrations.legacy``.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = (
    "emag_price_updates",
    "emag_products_v2",
    "emag_sync_runs",
    "emag_sync_seen",
    "emag_product_offers_v2",
    "emag_sync_rejects",
)


def upgrade() -> None:
    op.create_table(
        "emag_price_updates",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "requested_by", sa.Text(), nullable=False, comment="OS user or Prefect flow run that asked"
        ),
        sa.Column("source", sa.Text(), nullable=False, comment="cli, cli-bulk, flow"),
        sa.Column("flow_run_id", sa.Text(), nullable=True),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("account_type", sa.Text(), nullable=False),
        sa.Column("emag_offer_id", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("old_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("old_min_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("old_max_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("new_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("new_min_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("new_max_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="sending (intent written, no outcome yet), applied, refused, not-applied, uncertain",
        ),
        sa.Column("emag_response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "sent_entity",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="the offer/save entity sent: id and the price fields asked for",
        ),
        sa.Column(
            "sent_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when the intent was committed, just before sending",
        ),
        sa.Column(
            "answered_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when eMAG's answer (or the failure) arrived",
        ),
        sa.Column(
            "emag_answer",
            sa.Text(),
            nullable=True,
            comment="accepted, refused, no-answer; null while sending",
        ),
        sa.Column(
            "emag_messages",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="eMAG's messages for this offer's request",
        ),
        sa.Column(
            "reread_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when eMAG's prices were read back",
        ),
        sa.Column(
            "reread_source",
            sa.Text(),
            nullable=True,
            comment="save (right after it), reconcile (a later price run), sync",
        ),
        sa.Column(
            "reread_found",
            sa.Text(),
            nullable=True,
            comment="new prices, old prices, same prices, other prices, not found, failed",
        ),
        sa.Column(
            "reread_prices",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="the price fields eMAG held at reread_at",
        ),
        sa.Column(
            "large_change_allowed",
            sa.Boolean(),
            server_default="false",
            nullable=False,
            comment="the sale price moved by more than EMAG_MAX_PRICE_CHANGE and the operator allowed it",
        ),
        sa.CheckConstraint("account_type IN ('main', 'fbe')", name="emag_price_updates_account_type"),
        sa.PrimaryKeyConstraint("id"),
        schema="app",
    )
    op.create_index(
        "emag_price_updates_sku", "emag_price_updates", ["account_type", "sku"], unique=False, schema="app"
    )
    op.create_table(
        "emag_products_v2",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False, comment="the record's part_number"),
        sa.Column("account_type", sa.Text(), nullable=False),
        sa.Column(
            "emag_id",
            sa.BigInteger(),
            nullable=False,
            comment="the record's id (seller's internal product id)",
        ),
        sa.Column("part_number_key", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("brand", sa.Text(), nullable=True),
        sa.Column("category_id", sa.BigInteger(), nullable=True),
        sa.Column("ean", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("images", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("family_id", sa.BigInteger(), nullable=True),
        sa.Column("family_name", sa.Text(), nullable=True),
        sa.Column("validation_status", sa.SmallInteger(), nullable=True),
        sa.Column("validation_status_description", sa.Text(), nullable=True),
        sa.Column("translation_validation_status", sa.SmallInteger(), nullable=True),
        sa.Column("ownership", sa.SmallInteger(), nullable=True),
        sa.Column("genius_eligibility", sa.SmallInteger(), nullable=True),
        sa.Column("number_of_offers", sa.Integer(), nullable=True),
        sa.Column("buy_button_rank", sa.Integer(), nullable=True),
        sa.Column("best_offer_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column(
            "gpsr_manufacturer", sa.Boolean(), nullable=True, comment="manufacturer details present on eMAG"
        ),
        sa.Column(
            "gpsr_eu_representative",
            sa.Boolean(),
            nullable=True,
            comment="EU representative details present on eMAG",
        ),
        sa.Column(
            "raw_emag_data",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="the record as received, every value as sent",
        ),
        sa.Column(
            "content_hash",
            sa.Text(),
            nullable=False,
            comment="md5 of the loaded fields: unchanged rows are skipped",
        ),
        sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("account_type IN ('main', 'fbe')", name="emag_products_v2_account_type"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sku", "account_type", name="emag_products_v2_sku_account"),
        schema="app",
    )
    op.create_table(
        "emag_sync_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("account_type", sa.Text(), nullable=False),
        sa.Column(
            "flow_run_id",
            sa.Text(),
            nullable=True,
            comment="Prefect flow run; a retry of the same flow run resumes this row",
        ),
        sa.Column("status", sa.Text(), nullable=False, comment="running, succeeded, failed, abandoned"),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Numeric(precision=12, scale=3), nullable=True),
        sa.Column("items_per_page", sa.Integer(), nullable=False),
        sa.Column("pages_per_batch", sa.Integer(), nullable=False),
        sa.Column(
            "expected_items",
            sa.Integer(),
            nullable=True,
            comment="product_offer/count noOfItems at the start",
        ),
        sa.Column("expected_pages", sa.Integer(), nullable=True),
        sa.Column(
            "last_committed_page",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="the page of the last committed batch: a resumed attempt starts after it",
        ),
        sa.Column(
            "pages_read",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="pages the run's read committed",
        ),
        sa.Column("batches_committed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("records_read", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "records_loaded",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="distinct records loaded (the run's seen set, kept after it is cleaned): DQ completeness",
        ),
        sa.Column("duplicates_skipped", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rows_inserted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rows_updated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rows_unchanged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rows_rejected", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rows_deactivated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("api_requests", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "rate_limited", sa.Integer(), server_default="0", nullable=False, comment="429 answers received"
        ),
        sa.Column("retries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("resumed_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "dq_status", sa.Text(), nullable=True, comment="passed, warning, failed; null until checked"
        ),
        sa.Column("dq_results", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("account_type IN ('main', 'fbe')", name="emag_sync_runs_account_type"),
        sa.PrimaryKeyConstraint("id"),
        schema="app",
    )
    op.create_index(
        "emag_sync_runs_account_started",
        "emag_sync_runs",
        ["account_type", "started_at"],
        unique=False,
        schema="app",
    )
    op.create_index("emag_sync_runs_flow_run", "emag_sync_runs", ["flow_run_id"], unique=False, schema="app")
    op.create_table(
        "emag_sync_seen",
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("emag_id", sa.BigInteger(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "emag_id"),
        sa.UniqueConstraint("run_id", "sku", name="emag_sync_seen_run_sku"),
        schema="app",
    )
    op.create_table(
        "emag_product_offers_v2",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("product_id", sa.BigInteger(), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("account_type", sa.Text(), nullable=False),
        sa.Column(
            "emag_offer_id", sa.BigInteger(), nullable=False, comment="the record's id: what offer/save takes"
        ),
        sa.Column(
            "price",
            sa.Numeric(precision=14, scale=4),
            nullable=True,
            comment="current selling price ex-VAT (= sale_price)",
        ),
        sa.Column("sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("recommended_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("min_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("max_sale_price", sa.Numeric(precision=14, scale=4), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("vat_id", sa.Integer(), nullable=True),
        sa.Column("stock", sa.Integer(), nullable=True, comment="general_stock"),
        sa.Column("available_stock", sa.Integer(), nullable=True, comment="estimated_stock"),
        sa.Column(
            "reserved_stock",
            sa.Integer(),
            nullable=True,
            comment="general_stock - estimated_stock, never below 0",
        ),
        sa.Column("handling_time", sa.Integer(), nullable=True),
        sa.Column("status", sa.SmallInteger(), nullable=True, comment="0 inactive, 1 active, 2 end of life"),
        sa.Column(
            "visibility",
            sa.Text(),
            nullable=True,
            comment="'visible' when sellable per eMAG's rule, else 'hidden'",
        ),
        sa.Column("offer_validation_status", sa.SmallInteger(), nullable=True),
        sa.Column("offer_validation_status_description", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column(
            "prices_pushed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when eMAG confirmed the latest price update sent from here: a sync page read earlier never overwrites those prices",
        ),
        sa.Column(
            "sync_attempts",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="syncs that wrote this row (insert or change)",
        ),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("account_type IN ('main', 'fbe')", name="emag_product_offers_v2_account_type"),
        sa.ForeignKeyConstraint(["product_id"], ["app.emag_products_v2.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sku", "account_type", name="emag_product_offers_v2_sku_account"),
        schema="app",
    )
    op.create_index(
        "emag_product_offers_v2_offer_id",
        "emag_product_offers_v2",
        ["account_type", "emag_offer_id"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "emag_product_offers_v2_product_id",
        "emag_product_offers_v2",
        ["product_id"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "emag_product_offers_v2_pushed",
        "emag_product_offers_v2",
        ["account_type", "prices_pushed_at"],
        unique=False,
        schema="app",
        postgresql_where=sa.text("prices_pushed_at IS NOT NULL"),
    )
    op.create_table(
        "emag_sync_rejects",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("account_type", sa.Text(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("emag_id", sa.Text(), nullable=True, comment="as sent, may be unparsable"),
        sa.Column("sku", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "raw_payload",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="the record as received; one JSONB cannot hold as an object (a NUL, a lone surrogate, deeper than 255 levels, or JSON Python cannot parse) is kept as its JSON text, in a JSON string",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["app.emag_sync_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        schema="app",
    )
    op.create_index("emag_sync_rejects_run", "emag_sync_rejects", ["run_id"], unique=False, schema="app")


def downgrade() -> None:
    """Only an empty schema goes back to nothing: this revision's downgrade would drop every table."""
    bind = op.get_bind()
    filled = [table for table in TABLES if bind.scalar(sa.text(f"SELECT EXISTS (SELECT 1 FROM app.{table})"))]
    if filled:
        raise RuntimeError(
            f"revision 0001 is the first: downgrading it drops every table, and {', '.join(filled)} hold rows; "
            "nothing was dropped (back the data up and drop schema app yourself if that is what you want)"
        )
    for table in reversed(TABLES):
        op.drop_table(table, schema="app")
