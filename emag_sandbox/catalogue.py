"""Deterministic eMAG catalogues: record i of an account is generated on demand from (seed, account, i)."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

from emag_sync.limits import MAX_OFFER_ID, PRICE_DECIMALS
from emag_sync.platforms import platform_named

# Prices are kept as integers of 1/10,000 of a currency unit: eMAG allows up to four decimals.
PRICE_SCALE = 10**PRICE_DECIMALS
DEFAULT_PRODUCTS = 2550
# MAIN is "somewhat smaller" than FBE by default.
MAIN_SHARE = 0.85

# Prices per currency: (factor from the RON price grid, price step in 1/10,000). The currency is the
# platform's today (emag_sync.platforms: eMAG BG and Fashion Days BG price in EUR since 2026-01-01).
PRICE_GRID: dict[str, tuple[float, int]] = {
    "RON": (1.0, 100),
    "BGN": (0.39, 100),
    "EUR": (0.2, 100),
    "HUF": (78.5, PRICE_SCALE),  # HUF prices are whole forints
}

# A catalogue is of one of two kinds: FBE has a product per record, MAIN shares 2 of every 5 with FBE.
KINDS = ("main", "fbe")
# Seller ids: every account lives in its own range so one id never names records in two accounts. The
# first two accounts (a seller's MAIN and FBE, today's sandbox) keep their wide ranges; later ones get
# narrower ranges above them, which leaves room for hundreds of accounts under eMAG's largest id.
_ID_STRIDE = 3
_WIDE_RANGE = 100_000_000
_NARROW_BASE = 300_000_000
_NARROW_RANGE = 10_000_000
MAX_ACCOUNTS = 2 + (MAX_OFFER_ID + 1 - _NARROW_BASE) // _NARROW_RANGE
# MAIN products with a SKU of their own get product numbers far from the FBE ones.
_MAIN_ONLY_PRODUCT_BASE = 500_000_000
_PNK_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTVWXZ"  # 32 symbols
_PNK_SPACE = 32**6
_PNK_MULT = 0x2F3B5  # odd, so the product-number scramble is invertible modulo 2**30
_PNK_MULT_INV = pow(_PNK_MULT, -1, _PNK_SPACE)
# Where a catalogue named like today's two accounts sits when no position is given.
_LEGACY_POSITION = {"main": 1, "fbe": 2}

_BRANDS = (
    "Arcton",
    "Velmora",
    "Nordhaus",
    "Kestrel",
    "Lumio",
    "Tavora",
    "Brixel",
    "Solano",
    "Orvik",
    "Zenda",
)
_COLOURS = ("Negru", "Alb", "Argintiu", "Albastru", "Rosu", "Gri", "Verde")
# (category_id, noun, characteristics: (characteristic id, possible values))
_CATEGORIES: tuple[tuple[int, str, tuple[tuple[int, tuple[str, ...]], ...]], ...] = (
    (506, "Laptop", ((6506, ("8 GB", "16 GB", "32 GB")), (7802, ("256 GB SSD", "512 GB SSD", "1 TB SSD")))),
    (1327, "Casti wireless", ((5401, ("Bluetooth 5.0", "Bluetooth 5.3")), (5402, ("In-ear", "Over-ear")))),
    (2115, "Espressor", ((8121, ("15 bar", "19 bar")), (8122, ("1.2 l", "1.8 l")))),
    (3320, "Aspirator robot", ((9310, ("2000 Pa", "4000 Pa")), (9311, ("90 min", "150 min")))),
    (4410, "Monitor", ((6610, ('24"', '27"', '32"')), (6611, ("60 Hz", "144 Hz", "165 Hz")))),
    (5120, "Blender", ((7120, ("600 W", "1000 W", "1500 W")),)),
    (6230, "Trotineta electrica", ((9910, ("25 km", "40 km")), (9911, ("8.5", "10")))),
    (7340, "Smartwatch", ((5610, ("GPS", "fara GPS")), (5611, ("1.4", "1.9")))),
)
# (value, description, weight) of a product's validation_status
_VALIDATION = (
    (9, "Approved documentation", 70),
    (11, "Update awaiting approval", 8),
    (12, "Update rejected", 4),
    (3, "Waiting for EAN approval", 3),
    (4, "New documentation validation pending", 5),
    (8, "Documentation rejected", 5),
    (10, "Blocked", 3),
    (1, "In MKTP validation", 1),
    (6, "Invalid product – EAN rejected", 1),
)
_VALIDATION_CUMULATIVE = tuple(sum(w for _, _, w in _VALIDATION[: k + 1]) for k in range(len(_VALIDATION)))
_DOC_ERRORS = {
    8: [{"code": "DOC_IMAGES", "message": "Main image must have a white background"}],
    10: [{"code": "BLOCKED", "message": "Offer blocked by product health check"}],
    6: [{"code": "EAN_CONFLICT", "message": "EAN belongs to another product"}],
}
_SKU_EMG = re.compile(r"EMG(\d+)")
_SKU_MAIN = re.compile(r"MN(\d{5,})")


def format_price(units: int) -> str:
    """1/10,000 units to eMAG's string decimal, e.g. 1218400 -> "121.8400"."""
    return f"{units // PRICE_SCALE}.{units % PRICE_SCALE:04d}"


def _pnk(seed: int, product_no: int) -> str:
    code = (product_no * _PNK_MULT + seed) % _PNK_SPACE
    chars = []
    for _ in range(6):
        code, digit = divmod(code, 32)
        chars.append(_PNK_ALPHABET[digit])
    return "D" + "".join(chars) + "BM"


def _product_no_of_pnk(seed: int, pnk: str) -> int | None:
    if len(pnk) != 9 or not (pnk.startswith("D") and pnk.endswith("BM")):
        return None
    code = 0
    for char in reversed(pnk[1:7]):
        digit = _PNK_ALPHABET.find(char)
        if digit < 0:
            return None
        code = code * 32 + digit
    return ((code - seed) * _PNK_MULT_INV) % _PNK_SPACE


def _id_range(position: int) -> tuple[int, int]:
    """The first id and the number of records of the account at ``position`` (1-based)."""
    if position <= 2:
        return _WIDE_RANGE * position, _WIDE_RANGE // _ID_STRIDE
    return _NARROW_BASE + _NARROW_RANGE * (position - 3), _NARROW_RANGE // _ID_STRIDE


def _offer_stream(seed: int, position: int) -> int:
    """The seed of an account's offer fields; the first two keep today's so their records do not change."""
    return seed * 4 + position if position <= 2 else (seed << 32) + position


def _ean13(rng: random.Random) -> str:
    body = "594" + f"{rng.randrange(10**9):09d}"
    total = sum(int(d) * (3 if k % 2 else 1) for k, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def _round_to(units: float, step: int) -> int:
    return max(step, round(units / step) * step)


@dataclass(frozen=True)
class Catalogue:
    """One account's catalogue of ``size`` records; every method is O(1) and allocation-light.

    ``position`` (1-based, the account's place in the sandbox) picks its id range and its offer fields;
    ``kind`` its shape. Both default from the names ``main`` (1) and ``fbe`` (2), today's two accounts.
    """

    account: str  # the account's name
    size: int
    seed: int = 7
    platform: str = "ro"
    kind: str = ""
    position: int = 0

    def __post_init__(self) -> None:
        legacy = str(self.account) if str(self.account) in _LEGACY_POSITION else None
        if not self.kind:
            if legacy is None:
                raise ValueError(f"{self.account}: a catalogue needs a kind ({' or '.join(KINDS)})")
            object.__setattr__(self, "kind", legacy)
        if self.kind not in KINDS:
            raise ValueError(f"{self.account}: kind must be {' or '.join(KINDS)}, got {self.kind!r}")
        if not self.position:
            if legacy is None:
                raise ValueError(f"{self.account}: a catalogue needs a position (1 and up)")
            object.__setattr__(self, "position", _LEGACY_POSITION[legacy])
        if not 1 <= self.position <= MAX_ACCOUNTS:
            raise ValueError(f"{self.account}: position must be 1..{MAX_ACCOUNTS}, got {self.position}")
        if self.size < 0:
            raise ValueError(f"{self.account}: catalogue size must be >= 0, got {self.size}")
        room = _id_range(self.position)[1]
        if self.size > room:
            raise ValueError(f"{self.account}: at most {room} records fit its id range, got {self.size}")
        platform_named(self.platform)  # ValueError naming the platforms

    @property
    def currency(self) -> str:
        return platform_named(self.platform).currency()

    # --- identity: index <-> id, SKU, PNK ---------------------------------------------------------
    def id_of(self, index: int) -> int:
        return _id_range(self.position)[0] + _ID_STRIDE * index + 1

    def index_of_id(self, emag_id: int) -> int | None:
        offset = emag_id - _id_range(self.position)[0] - 1
        index, rest = divmod(offset, _ID_STRIDE)
        return index if rest == 0 and 0 <= index < self.size else None

    def product_no(self, index: int) -> int:
        """The product behind record ``index``; MAIN shares 2 of every 5 products with FBE."""
        if self.kind == "fbe" or index % 5 in (3, 4):
            return index + 1
        return _MAIN_ONLY_PRODUCT_BASE + index

    def sku_of(self, index: int) -> str:
        number = self.product_no(index)
        return f"EMG{number}" if number < _MAIN_ONLY_PRODUCT_BASE else f"MN{index + 1:05d}"

    def index_of_sku(self, sku: str) -> int | None:
        match = _SKU_EMG.fullmatch(sku)
        if match:
            index = int(match.group(1)) - 1
        else:
            match = _SKU_MAIN.fullmatch(sku)
            if not match or self.kind != "main":
                return None
            index = int(match.group(1)) - 1
        if 0 <= index < self.size and self.sku_of(index) == sku:
            return index
        return None

    def index_of_pnk(self, pnk: str) -> int | None:
        number = _product_no_of_pnk(self.seed, pnk)
        if number is None:
            return None
        index = number - 1 if number < _MAIN_ONLY_PRODUCT_BASE else number - _MAIN_ONLY_PRODUCT_BASE
        if 0 <= index < self.size and self.product_no(index) == number:
            return index
        return None

    # --- records ----------------------------------------------------------------------------------
    def record(self, index: int) -> dict[str, Any]:
        """Record ``index`` as product_offer/read returns it (a new dict each call)."""
        if not 0 <= index < self.size:
            raise IndexError(f"{self.account}: record {index} outside 0..{self.size - 1}")
        record: dict[str, Any] = {"id": self.id_of(index), "part_number": self.sku_of(index)}
        record.update(self._product_content(self.product_no(index)))
        record.update(self.offer_fields(index))
        return record

    def _product_content(self, number: int) -> dict[str, Any]:
        """What belongs to the eMAG product, so a SKU in both accounts shows the same product."""
        rng = random.Random(self.seed * 4_294_967_296 + number)
        category_id, noun, characteristics = _CATEGORIES[rng.randrange(len(_CATEGORIES))]
        brand = _BRANDS[rng.randrange(len(_BRANDS))]
        colour = _COLOURS[rng.randrange(len(_COLOURS))]
        model = f"{brand[:2].upper()}-{number % 10_000:04d}"
        pnk = _pnk(self.seed, number)
        roll = rng.random()
        if roll < 0.02:  # observed: EANs that are not 6-14 digits
            eans = [rng.choice(("12345", "59412345678AB", "000"))]
        elif roll < 0.05:
            eans = []
        elif roll < 0.15:
            eans = [_ean13(rng), _ean13(rng)]
        else:
            eans = [_ean13(rng)]
        image_count = 1 + rng.randrange(4)
        images = [
            {
                "url": f"https://sandbox-cdn.example/emag/{pnk.lower()}/{k}.jpg",
                "display_type": 1 if k == 0 else 2,
            }
            for k in range(image_count)
        ]
        chars = [{"id": cid, "value": values[rng.randrange(len(values))]} for cid, values in characteristics]
        family = None
        if rng.random() < 0.4:  # observed: family is null for most products
            family = {"id": 200 + number % 97, "name": f"{brand} {noun}", "family_type_id": 1 + number % 3}
        has_manufacturer = rng.random() < 0.8
        return {
            "part_number_key": pnk,
            "name": f"{noun} {brand} {model}, {colour}",
            "brand": brand,
            "category_id": category_id,
            "vendor_category_id": None,
            "description": f"<p>{noun} {brand} {model}. Culoare: {colour}.</p>",
            "ean": eans,
            "images": images,
            "characteristics": chars,
            "family": family,
            "warranty": 24 if rng.random() < 0.8 else 12,
            "manufacturer": has_manufacturer,
            "eu_representative": has_manufacturer and rng.random() < 0.5,
            "safety_information": "Keep out of reach of children." if rng.random() < 0.3 else None,
        }

    def offer_fields(self, index: int) -> dict[str, Any]:
        """What belongs to this account's offer: prices, stock, statuses (every filterable field).

        The draw order is part of the catalogue: changing it changes every seed's records.
        """
        rng = random.Random(_offer_stream(self.seed, self.position) * 4_294_967_296 + index)
        currency = self.currency
        factor, step = PRICE_GRID[currency]
        ron = math.exp(rng.uniform(math.log(10), math.log(5000))) * PRICE_SCALE
        sale = _round_to(ron * factor, step)
        if step < PRICE_SCALE and rng.random() < 0.3:  # ex-VAT prices often carry four decimals
            sale += rng.randrange(1, step)
        minimum = max(step, (int(sale * rng.uniform(0.6, 0.95)) // step) * step)
        maximum = _round_to(sale * rng.uniform(1.1, 2.0), step) + step
        recommended = None if rng.random() < 0.35 else _round_to(sale * rng.uniform(1.05, 1.5), step) + step
        offers = 1 + rng.randrange(12)
        best = sale if offers == 1 else min(sale, _round_to(sale * rng.uniform(0.85, 1.0), step))
        general = 0 if rng.random() < 0.15 else rng.randrange(1, 500)
        estimated = general - min(general, rng.randrange(6))
        stock: dict[str, int] = {"warehouse_id": 1, "value": general}
        if rng.random() < 0.05:  # observed: warehouse id sometimes absent
            del stock["warehouse_id"]
        status_roll = rng.random()
        status = 1 if status_roll < 0.85 else (0 if status_roll < 0.95 else 2)
        pick = rng.randrange(_VALIDATION_CUMULATIVE[-1])
        value, description = next(
            (v, d) for (v, d, _), edge in zip(_VALIDATION, _VALIDATION_CUMULATIVE, strict=True) if pick < edge
        )
        translation = (value, description) if rng.random() < 0.8 else (17, "Partial translation")
        price_ok = rng.random() < 0.93
        ownership_roll = rng.random()
        ownership: int | bool = 1 if ownership_roll < 0.55 else (2 if ownership_roll < 0.95 else True)
        genius = 1 if rng.random() < 0.4 else 0
        return {
            "url": "" if rng.random() < 0.1 else f"https://shop.example/p/{index + 1}",
            "status": status,
            "sale_price": format_price(sale),
            "recommended_price": None if recommended is None else format_price(recommended),
            "min_sale_price": format_price(minimum),
            "max_sale_price": format_price(maximum),
            "currency": currency,
            "vat_id": 1 if rng.random() < 0.9 else 2,
            "general_stock": general,
            "estimated_stock": estimated,
            "stock": [stock],
            "handling_time": [{"warehouse_id": 1, "value": rng.randrange(4)}],
            "offer_details": {"supply_lead_time": 14},
            "validation_status": [
                {"value": value, "description": description, "errors": _DOC_ERRORS.get(value)}
            ],
            "translation_validation_status": [
                {"value": translation[0], "description": translation[1], "errors": None}
            ],
            "offer_validation_status": {"value": 1, "description": "Valid"}
            if price_ok
            else {"value": 2, "description": "Invalid price"},
            "doc_errors": None,
            "number_of_offers": offers,
            "buy_button_rank": 1 + rng.randrange(offers),
            "best_offer_sale_price": format_price(best),
            "best_offer_recommended_price": None if recommended is None else format_price(recommended),
            "ownership": ownership,
            "genius_eligibility": genius,
            "genius_eligibility_type": 1 + rng.randrange(3) if genius else 0,
            "genius_computed": 0,
        }
