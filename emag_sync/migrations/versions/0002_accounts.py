"""accounts as data.

The account registry (app.emag_accounts), and an ``account`` column (the account's name) on every table,
keying the catalogue by (sku, account) instead of (sku, account_type); account_type keeps the kind. Rows
written before belong to the accounts ``main`` and ``fbe``, registered here when they hold data (their
platform read from their offers' currency), else on first use.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "app"
ACCOUNT_COMMENT = "the account's name (app.emag_accounts)"
KIND_COMMENT = "the account's kind: main or fbe"
# (table, foreign key to the registry): the catalogue tables skip it (see emag_sync.schema).
TABLES = (
    ("emag_products_v2", False),
    ("emag_product_offers_v2", False),
    ("emag_sync_runs", True),
    ("emag_sync_rejects", False),
    ("emag_price_updates", True),
)
# (name, table, columns with account_type, columns with account, where, unique)
KEYS = (
    ("emag_products_v2_sku_account", "emag_products_v2", ("sku", "account_type"), ("sku", "account"), None, True),
    (
        "emag_product_offers_v2_sku_account", "emag_product_offers_v2",
        ("sku", "account_type"), ("sku", "account"), None, True,
    ),
    (
        "emag_product_offers_v2_offer_id", "emag_product_offers_v2",
        ("account_type", "emag_offer_id"), ("account", "emag_offer_id"), None, False,
    ),
    (
        "emag_product_offers_v2_pushed", "emag_product_offers_v2",
        ("account_type", "prices_pushed_at"), ("account", "prices_pushed_at"), "prices_pushed_at IS NOT NULL",
        False,
    ),
    (
        "emag_sync_runs_account_started", "emag_sync_runs",
        ("account_type", "started_at"), ("account", "started_at"), None, False,
    ),
    ("emag_price_updates_sku", "emag_price_updates", ("account_type", "sku"), ("account", "sku"), None, False),
)  # fmt: skip
PLATFORMS = ("emag-ro", "emag-bg", "emag-hu", "fd-ro", "fd-bg")  # emag_sync.platforms, as of this revision
NAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


def upgrade() -> None:
    op.create_table(
        "emag_accounts",
        sa.Column("name", sa.Text(), nullable=False, comment="a slug such as ro-fbe or acme-bg-main"),
        sa.Column(
            "seller", sa.Text(), nullable=True, comment="free text, for grouping (an integrator's client)"
        ),
        sa.Column("platform", sa.Text(), nullable=False, comment=", ".join(PLATFORMS)),
        sa.Column("kind", sa.Text(), nullable=False, comment="main or fbe"),
        sa.Column(
            "api_url",
            sa.Text(),
            nullable=True,
            comment="overrides the platform's API URL (a proxy, the sandbox)",
        ),
        sa.Column(
            "requests_per_second",
            sa.Numeric(precision=8, scale=3),
            server_default=sa.text("3"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "removed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set by `accounts remove --keep-data`",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"name ~ '{NAME_PATTERN}'", name="emag_accounts_name"),
        sa.CheckConstraint(f"platform IN {PLATFORMS!r}", name="emag_accounts_platform"),
        sa.CheckConstraint("kind IN ('main', 'fbe')", name="emag_accounts_kind"),
        sa.CheckConstraint("requests_per_second > 0", name="emag_accounts_requests_per_second"),
        sa.PrimaryKeyConstraint("name"),
        schema=SCHEMA,
    )
    # The two accounts of earlier versions, where they have rows: platform from their offers' currency.
    op.execute(
        f"""
        INSERT INTO {SCHEMA}.emag_accounts (name, kind, platform)
        SELECT kind, kind, COALESCE(
            (SELECT CASE o.currency WHEN 'HUF' THEN 'emag-hu' WHEN 'BGN' THEN 'emag-bg' WHEN 'EUR' THEN 'emag-bg'
                    ELSE 'emag-ro' END
               FROM {SCHEMA}.emag_product_offers_v2 o WHERE o.account_type = kind AND o.currency IS NOT NULL
              GROUP BY o.currency ORDER BY count(*) DESC, o.currency LIMIT 1),
            'emag-ro')
        FROM (
            SELECT account_type AS kind FROM {SCHEMA}.emag_products_v2
            UNION SELECT account_type FROM {SCHEMA}.emag_product_offers_v2
            UNION SELECT account_type FROM {SCHEMA}.emag_sync_runs
            UNION SELECT account_type FROM {SCHEMA}.emag_sync_rejects
            UNION SELECT account_type FROM {SCHEMA}.emag_price_updates
        ) used
        """
    )
    for table, registered in TABLES:
        op.add_column(
            table, sa.Column("account", sa.Text(), nullable=True, comment=ACCOUNT_COMMENT), schema=SCHEMA
        )
        op.execute(f"UPDATE {SCHEMA}.{table} SET account = account_type")
        op.alter_column(table, "account", nullable=False, schema=SCHEMA)
        op.alter_column(
            table, "account_type", comment=KIND_COMMENT, existing_type=sa.Text(), existing_nullable=False,
            schema=SCHEMA,
        )  # fmt: skip
        if registered:
            op.create_foreign_key(
                f"{table}_account_fkey", table, "emag_accounts", ["account"], ["name"],
                source_schema=SCHEMA, referent_schema=SCHEMA, onupdate="CASCADE",
            )  # fmt: skip
    _rekey(to_account=True)


def downgrade() -> None:
    """Back to one MAIN and one FBE account: refused while any other account has rows (they would have no
    place in revision 0001's tables); the registry goes."""
    bind = op.get_bind()
    others: set[str] = set()
    for table, _ in TABLES:
        query = sa.text(f"SELECT DISTINCT account FROM {SCHEMA}.{table} WHERE account <> account_type")
        others.update(bind.execute(query).scalars())
    if others:
        raise RuntimeError(
            f"accounts {', '.join(sorted(others))} have rows, and revision 0001 knows only main and fbe; nothing was "
            "changed (remove them first: `emag-sync accounts remove NAME`, after backing their rows up)"
        )
    _rekey(to_account=False)
    for table, registered in TABLES:
        if registered:
            op.drop_constraint(f"{table}_account_fkey", table, schema=SCHEMA, type_="foreignkey")
        op.drop_column(table, "account", schema=SCHEMA)
        op.alter_column(
            table,
            "account_type",
            comment=None,
            existing_type=sa.Text(),
            existing_nullable=False,
            schema=SCHEMA,
        )
    op.drop_table("emag_accounts", schema=SCHEMA)


def _rekey(*, to_account: bool) -> None:
    """The catalogue's keys and the account indexes on ``account`` (upgrade) or ``account_type``."""
    for name, table, by_kind, by_name, where, unique in KEYS:
        columns = list(by_name if to_account else by_kind)
        if unique:
            op.drop_constraint(name, table, schema=SCHEMA, type_="unique")
            op.create_unique_constraint(name, table, columns, schema=SCHEMA)
        else:
            op.drop_index(name, table_name=table, schema=SCHEMA)
            op.create_index(
                name, table, columns, unique=False, schema=SCHEMA,
                postgresql_where=sa.text(where) if where else None,
            )  # fmt: skip
