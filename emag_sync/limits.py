"""Every limit and documented rule of the eMAG Marketplace API (document v4.4.9), named once."""

from __future__ import annotations

from decimal import Decimal

from emag_sync.platforms import DEFAULT_PLATFORM, all_currencies

# Hosts (section 1.1, all five in emag_sync.platforms); the pipeline defaults to eMAG Romania.
DEFAULT_API_URL = DEFAULT_PLATFORM.api_url

# Section 1.5: everything but orders shares 3 requests/s and 180/min per account (reads and writes together).
REQUESTS_PER_SECOND = 3.0
SECONDS_PER_MINUTE = 60
REQUESTS_PER_MINUTE = 180

# Section 1.3: product_offer/read pages hold at most 100 records.
MAX_ITEMS_PER_PAGE = 100
# Section 1.5 / 2.6: bulk saves take at most 50 entities per request.
MAX_ENTITIES_PER_SAVE = 50
# The seller's product id (what offer/save takes) is an integer between 1 and 4294967295.
MIN_OFFER_ID = 1
MAX_OFFER_ID = 4_294_967_295
# Prices are ex-VAT "with up to four decimals".
PRICE_DECIMALS = 4
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_DECIMALS)
# Stock is an unsigned 16-bit value per warehouse (section 2.8); handling time at most 255 days.
MAX_STOCK = 65_535
# offer/save's stock[] names a warehouse; a seller with one warehouse has warehouse_id 1 (reads may omit it).
DEFAULT_WAREHOUSE_ID = 1
MAX_HANDLING_DAYS = 255

# product_offer/read status: 0 inactive, 1 active, 2 end of life.
OFFER_STATUS_INACTIVE, OFFER_STATUS_ACTIVE, OFFER_STATUS_END_OF_LIFE = 0, 1, 2
OFFER_STATUS_NAMES = {OFFER_STATUS_INACTIVE: "inactive", OFFER_STATUS_END_OF_LIFE: "end of life"}
# An offer is sellable only when stock > 0, status 1, offer_validation_status 1 ("Saleable") and its
# product's validation_status is one of these.
OFFER_VALIDATION_SALEABLE = 1
SELLABLE_VALIDATION_STATUSES = frozenset({3, 9, 11, 12})
# ownership: 1 eligible for content updates, 2 not (observed as true/false too).
OWNERSHIP_ELIGIBLE, OWNERSHIP_NOT_ELIGIBLE = 1, 2
# Currencies of the eMAG platforms (RO, BG, HU, Fashion Days; BGN before 2026) plus EUR, accepted everywhere.
PLATFORM_CURRENCIES = all_currencies()
