"""The data-quality expectations per account, declared as plain data (no Great Expectations import here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from emag_sync.accounts import Account
from emag_sync.limits import MAX_STOCK, PLATFORM_CURRENCIES
from emag_sync.schema import SCHEMA, offers, products, sync_runs

Severity = Literal["critical", "warning"]

DEFAULT_REJECT_THRESHOLD = 0.01
# A run that loaded less than this share of eMAG's count fails (critical); between the two it warns.
DEFAULT_MIN_LOADED_SHARE = 0.90
# How many offending SKUs a failure message names; Data Docs keep up to GX's own limit (200).
MAX_LISTED_SKUS = 20

# Assets: one SQL query per account and subject; {account} is filled from AccountType, never user text.
PRODUCTS = "products"
OFFERS = "offers"
ACTIVE_PRODUCTS = "active_products"
ACTIVE_OFFERS = "active_offers"
RUN = "run"
# The suite parameter carrying the account's active product count into the count expectation.
ACTIVE_PRODUCT_COUNT = "active_products"

_P = f"{SCHEMA}.{products.name}"
_O = f"{SCHEMA}.{offers.name}"
_R = f"{SCHEMA}.{sync_runs.name}"

ASSET_QUERIES: Mapping[str, str] = {
    PRODUCTS: f"SELECT id, sku, account_type, account, is_active FROM {_P} WHERE account = '{{account}}'",
    OFFERS: f"SELECT id, sku, account_type, account, is_active FROM {_O} WHERE account = '{{account}}'",
    ACTIVE_PRODUCTS: (
        f"SELECT id, sku, account_type, account, emag_id FROM {_P} WHERE account = '{{account}}' AND is_active"
    ),
    ACTIVE_OFFERS: (
        "SELECT id, product_id, sku, account_type, account, emag_offer_id, sale_price, min_sale_price, max_sale_price,"
        f" currency, stock, available_stock, reserved_stock FROM {_O}"
        " WHERE account = '{account}' AND is_active"
    ),
    RUN: (
        "SELECT id, account_type, account, status, expected_items, records_loaded, rows_rejected, rows_deactivated"
        f" FROM {_R} WHERE account = '{{account}}' AND id = {{run_id:d}}"
    ),
}


@dataclass(frozen=True)
class Check:
    """One expectation: which asset it validates, the GX expectation class and its arguments.

    ``failure`` is the message template used when it fails; it may use ``{observed}``, ``{expected}``,
    ``{unexpected}``, ``{total}``, ``{skus}`` and the run's ``{run_id}``, ``{expected_items}``,
    ``{records_loaded}``, ``{rows_rejected}``, ``{reject_share}``.
    """

    name: str
    severity: Severity
    asset: str
    expectation: str
    kwargs: Mapping[str, object] = field(default_factory=dict)
    failure: str = ""
    description: str | None = None


# Rows a failing check returns from SQL must carry ``sku`` so the report can name them.
_PRODUCTS_WITHOUT_ONE_OFFER = f"""
SELECT p.sku, count(o.id) AS active_offers
FROM {{batch}} AS p
LEFT JOIN {_O} AS o ON o.product_id = p.id AND o.account = p.account AND o.is_active
GROUP BY p.sku
HAVING count(o.id) <> 1
ORDER BY p.sku
"""

_OFFERS_WITHOUT_PRODUCT = f"""
SELECT o.sku, o.product_id
FROM {{batch}} AS o
LEFT JOIN {_P} AS p
  ON p.id = o.product_id AND p.account = o.account AND p.sku = o.sku AND p.is_active
WHERE p.id IS NULL
ORDER BY o.sku
"""

# records_loaded counts the distinct records the run loaded; with rows_rejected it must add up to eMAG's count.
# Every record eMAG counted is accounted for: loaded, rejected, or confirmed gone (read by id) during the
# run. More than counted is not a gap: records were added while the read went on.
_INCOMPLETE_RUN = """
SELECT id, expected_items, records_loaded, rows_rejected, rows_deactivated FROM {batch}
WHERE expected_items IS NULL OR records_loaded + rows_rejected + rows_deactivated < expected_items
"""

# A run that rejected most of what eMAG counted loaded nothing useful, however complete its read was.
_TOO_LITTLE_LOADED = """
SELECT id, expected_items, records_loaded, rows_rejected FROM {{batch}}
WHERE expected_items > 0 AND records_loaded < {share!r} * expected_items
"""

_TOO_MANY_REJECTS = """
SELECT id, expected_items, records_loaded, rows_rejected FROM {{batch}}
WHERE rows_rejected > {threshold!r} * greatest(coalesce(expected_items, 0), records_loaded + rows_rejected)
"""


def _active_offer_checks(currencies: Sequence[str]) -> list[Check]:
    """Per-column expectations on the account's active offers."""
    not_null = [
        Check(
            f"active_offers_{column}_not_null",
            "critical",
            ACTIVE_OFFERS,
            "ExpectColumnValuesToNotBeNull",
            {"column": column},
            f"{{unexpected}} active offers without {column}: {{skus}}",
        )
        for column in ("sku", "emag_offer_id", "sale_price")
    ]
    stock_ranges = [
        Check(
            f"{column}_within_0_{MAX_STOCK}",
            "warning",
            ACTIVE_OFFERS,
            "ExpectColumnValuesToBeBetween",
            {"column": column, "min_value": 0, "max_value": MAX_STOCK},
            f"{{unexpected}} active offers with {column} outside 0..{MAX_STOCK}: {{skus}}",
        )
        for column in ("stock", "available_stock", "reserved_stock")
    ]
    # Each pair reads "column_A >= column_B"; rows missing either value are left to the not-null checks.
    # No "available_stock <= stock": eMAG's estimated stock is at times above its general stock, and the
    # transform already clips reserved stock at 0, so that warning fired on healthy runs with nothing to do.
    pairs = [
        Check(
            name,
            "warning",
            ACTIVE_OFFERS,
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": a, "column_B": b, "or_equal": True, "ignore_row_if": "either_value_is_missing"},
            f"{{unexpected}} active offers with {what}: {{skus}}",
        )
        for name, a, b, what in (
            (
                "sale_price_at_least_min_sale_price",
                "sale_price",
                "min_sale_price",
                "sale_price < min_sale_price",
            ),
            (
                "sale_price_at_most_max_sale_price",
                "max_sale_price",
                "sale_price",
                "sale_price > max_sale_price",
            ),
        )
    ]
    currency = Check(
        "currency_in_platform_set",
        "warning",
        ACTIVE_OFFERS,
        "ExpectColumnValuesToBeInSet",
        {"column": "currency", "value_set": list(currencies)},
        f"{{unexpected}} active offers with a currency outside {', '.join(currencies)}: {{skus}}",
    )
    return [*not_null, *stock_ranges, *pairs, currency]


def _run_checks(reject_threshold: float, min_loaded_share: float) -> list[Check]:
    """Completeness of the account's sync run against eMAG's count, and its share of rejects."""
    return [
        Check(
            "run_complete_against_emag_count",
            "critical",
            RUN,
            "UnexpectedRowsExpectation",
            {"unexpected_rows_query": _INCOMPLETE_RUN},
            "records loaded {records_loaded} + rejected {rows_rejected} + confirmed gone {rows_deactivated}"
            " < eMAG count {expected_items} (run {run_id})",
            "Records loaded, rejected and confirmed gone account for eMAG's product_offer/count for the run",
        ),
        Check(
            "run_loaded_most_of_emag_count",
            "critical",
            RUN,
            "UnexpectedRowsExpectation",
            {"unexpected_rows_query": _TOO_LITTLE_LOADED.format(share=float(min_loaded_share))},
            f"loaded only {{records_loaded}} of eMAG's {{expected_items}} records, below {min_loaded_share:.0%};"
            " {rows_rejected} were rejected (run {run_id}; reasons in app.emag_sync_rejects)",
            f"The run loaded at least {min_loaded_share:.0%} of what eMAG counted",
        ),
        Check(
            "rejected_share_under_threshold",
            "warning",
            RUN,
            "UnexpectedRowsExpectation",
            {"unexpected_rows_query": _TOO_MANY_REJECTS.format(threshold=float(reject_threshold))},
            f"rejected {{rows_rejected}} records ({{reject_share}}) exceed {reject_threshold:.2%} (run {{run_id}})",
            f"Rejected records stay under {reject_threshold:.2%} of the run's records",
        ),
    ]


def checks_for(
    *,
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD,
    min_loaded_share: float = DEFAULT_MIN_LOADED_SHARE,
    currencies: Sequence[str] = PLATFORM_CURRENCIES,
) -> list[Check]:
    """Every expectation of one account, critical ones first; ``currencies``: what its platform prices in
    today (``Platform.accepted_currencies``; default any platform's)."""
    unique = [
        Check(
            f"{asset}_sku_account_unique",
            "critical",
            asset,
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": ["sku", "account"]},
            f"{{unexpected}} {asset} rows share a (sku, account): {{skus}}",
        )
        for asset in (PRODUCTS, OFFERS)
    ]
    # A row stands for an eMAG id and a part_number: two active rows of one id (a SKU renamed on eMAG whose
    # old row stayed active) would send one row's price updates to the other's offer.
    one_row_per_emag_id = [
        Check(
            f"{asset}_{column}_unique",
            "critical",
            asset,
            "ExpectColumnValuesToBeUnique",
            {"column": column},
            f"{{unexpected}} {asset.replace('_', ' ')} share their eMAG id ({column}) with another active row: {{skus}}",
            f"An eMAG id ({column}) belongs to at most one of the account's {asset.replace('_', ' ')}",
        )
        for asset, column in ((ACTIVE_PRODUCTS, "emag_id"), (ACTIVE_OFFERS, "emag_offer_id"))
    ]
    coverage = [
        Check(
            "active_offer_count_equals_active_product_count",
            "critical",
            ACTIVE_OFFERS,
            "ExpectTableRowCountToEqual",
            # Filled at run time with the account's active product count (a GX suite parameter).
            {"value": {"$PARAMETER": ACTIVE_PRODUCT_COUNT}},
            "active offers {observed} != active products {expected}",
        ),
        Check(
            "active_product_has_one_active_offer",
            "critical",
            ACTIVE_PRODUCTS,
            "UnexpectedRowsExpectation",
            {"unexpected_rows_query": _PRODUCTS_WITHOUT_ONE_OFFER},
            "{unexpected} active products without exactly one active offer: {skus}",
            "Every active product has exactly one active offer of its account",
        ),
        Check(
            "active_offer_has_active_product",
            "critical",
            ACTIVE_OFFERS,
            "UnexpectedRowsExpectation",
            {"unexpected_rows_query": _OFFERS_WITHOUT_PRODUCT},
            "{unexpected} active offers point at a missing or inactive product: {skus}",
            "Every active offer points at an active product of its account with the same SKU",
        ),
    ]
    checks = [
        *coverage,
        *unique,
        *one_row_per_emag_id,
        *_active_offer_checks(currencies),
        *_run_checks(reject_threshold, min_loaded_share),
    ]
    return sorted(checks, key=lambda check: check.severity != "critical")


def asset_query(asset: str, account: Account, run_id: int | None = None) -> str:
    """The SQL of one asset for one account."""
    return ASSET_QUERIES[asset].format(account=account.name, run_id=run_id or 0)
