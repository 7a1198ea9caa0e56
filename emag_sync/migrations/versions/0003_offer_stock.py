"""stock updates beside price updates.

The audit (app.emag_price_updates) holds offer updates of two kinds: every existing row is a price
update (``kind`` 'price'); a stock update names its warehouse and the stock before, asked for and re-read.
Offers get ``stock_pushed_at``, so a sync page read before a stock push was confirmed does not take it
back (as ``prices_pushed_at`` does for prices).

Revision ID: 0003_offer_stock
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_offer_stock"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "app"
AUDIT = "emag_price_updates"
OFFERS = "emag_product_offers_v2"
STOCK_COLUMNS = (
    ("warehouse_id", "stock updates: the warehouse whose stock was set"),
    ("old_stock", "stock updates: the warehouse's stock on eMAG before"),
    ("new_stock", "stock updates: the stock asked for"),
    ("reread_stock", "stock updates: the warehouse's stock eMAG held at reread_at"),
)


def upgrade() -> None:
    op.add_column(
        AUDIT,
        sa.Column(
            "kind", sa.Text(), server_default=sa.text("'price'"), nullable=False, comment="price or stock"
        ),
        schema=SCHEMA,
    )
    for name, comment in STOCK_COLUMNS:
        op.add_column(AUDIT, sa.Column(name, sa.Integer(), nullable=True, comment=comment), schema=SCHEMA)
    op.add_column(
        AUDIT,
        sa.Column(
            "mass_zero_allowed",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
            comment="part of a bulk setting more than EMAG_MAX_ZERO_STOCK_SHARE of the offers to 0, allowed",
        ),
        schema=SCHEMA,
    )
    op.create_check_constraint("emag_price_updates_kind", AUDIT, "kind IN ('price', 'stock')", schema=SCHEMA)
    op.add_column(
        OFFERS,
        sa.Column(
            "stock_pushed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when eMAG confirmed the latest stock update sent from here: a sync page read earlier "
            "never overwrites that stock",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "emag_product_offers_v2_stock_pushed", OFFERS, ["account", "stock_pushed_at"], unique=False,
        schema=SCHEMA, postgresql_where=sa.text("stock_pushed_at IS NOT NULL"),
    )  # fmt: skip


def downgrade() -> None:
    """Back to price updates only: refused while stock updates are recorded (revision 0002's audit could
    not tell them from price updates); the offers' stock_pushed_at goes."""
    bind = op.get_bind()
    stock_rows: int = bind.execute(
        sa.text(f"SELECT count(*) FROM {SCHEMA}.{AUDIT} WHERE kind = 'stock'")
    ).scalar_one()
    if stock_rows:
        raise RuntimeError(
            f"{stock_rows} stock update(s) are recorded in {SCHEMA}.{AUDIT}, and revision 0002 knows only price "
            "updates; nothing was changed (back them up and delete them first)"
        )
    op.drop_index("emag_product_offers_v2_stock_pushed", table_name=OFFERS, schema=SCHEMA)
    op.drop_column(OFFERS, "stock_pushed_at", schema=SCHEMA)
    op.drop_constraint("emag_price_updates_kind", AUDIT, schema=SCHEMA, type_="check")
    op.drop_column(AUDIT, "mass_zero_allowed", schema=SCHEMA)
    for name, _ in reversed(STOCK_COLUMNS):
        op.drop_column(AUDIT, name, schema=SCHEMA)
    op.drop_column(AUDIT, "kind", schema=SCHEMA)
