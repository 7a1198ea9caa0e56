"""The five platforms eMAG's Marketplace API serves, and their facts, in one place: API URL, locale,
currency by date, VAT ids and rates.

eMAG's document (v4.4.9, section 1.1) lists eMAG Romania, Bulgaria and Hungary and Fashion Days Romania and
Bulgaria on the same API, each with its own host. Bulgaria adopted the euro on 2026-01-01: eMAG BG and
Fashion Days BG price in EUR from that day (the document still says BGN), so a platform's currency is data
with a start date, not a constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from urllib.parse import urlsplit

# eMAG accepts EUR on every platform beside the local currency.
EUR = "EUR"

# VAT ids are platform-specific and only listed by eMAG's vat/read. Assumption, for display only (a
# VAT-inclusive price is never sent): id 1 is the platform's standard rate, id 2 its reduced rate, id 3
# zero. RO 21 % / 11 % (since 2025-08-01), BG 20 % / 9 %, HU 27 % / 5 %.
_RO_VAT = {1: Decimal("0.21"), 2: Decimal("0.11"), 3: Decimal("0")}
_BG_VAT = {1: Decimal("0.20"), 2: Decimal("0.09"), 3: Decimal("0")}
_HU_VAT = {1: Decimal("0.27"), 2: Decimal("0.05"), 3: Decimal("0")}
_EURO_IN_BULGARIA = date(2026, 1, 1)


@dataclass(frozen=True)
class Platform:
    """One eMAG platform: where its API is, its language and its money."""

    code: str  # emag-ro, emag-bg, emag-hu, fd-ro, fd-bg: what `accounts add --platform` takes
    name: str
    api_url: str
    locale: str
    currencies: tuple[tuple[date, str], ...]  # (from, currency), oldest first
    vat_rates: Mapping[int, Decimal] = field(compare=False, hash=False)  # facts of the code, not identity

    def currency_on(self, day: date) -> str:
        """The platform's own currency on ``day``."""
        current = self.currencies[0][1]
        for since, currency in self.currencies:
            if day >= since:
                current = currency
        return current

    def currency(self) -> str:
        """The platform's own currency today (UTC)."""
        return self.currency_on(datetime.now(UTC).date())

    def accepted_currencies(self, day: date | None = None) -> tuple[str, ...]:
        """What an active offer of this platform may be priced in on ``day``: its currency, and EUR."""
        own = self.currency_on(day or datetime.now(UTC).date())
        return (own,) if own == EUR else (own, EUR)


PLATFORMS: dict[str, Platform] = {
    platform.code: platform
    for platform in (
        Platform(
            "emag-ro", "eMAG Romania", "https://marketplace-api.emag.ro/api-3", "ro_RO",
            ((date.min, "RON"),), _RO_VAT,
        ),
        Platform(
            "emag-bg", "eMAG Bulgaria", "https://marketplace-api.emag.bg/api-3", "bg_BG",
            ((date.min, "BGN"), (_EURO_IN_BULGARIA, EUR)), _BG_VAT,
        ),
        Platform(
            "emag-hu", "eMAG Hungary", "https://marketplace-api.emag.hu/api-3", "hu_HU",
            ((date.min, "HUF"),), _HU_VAT,
        ),
        Platform(
            "fd-ro", "Fashion Days Romania", "https://marketplace-ro-api.fashiondays.com/api-3", "ro_RO",
            ((date.min, "RON"),), _RO_VAT,
        ),
        Platform(
            "fd-bg", "Fashion Days Bulgaria", "https://marketplace-bg-api.fashiondays.com/api-3", "bg_BG",
            ((date.min, "BGN"), (_EURO_IN_BULGARIA, EUR)), _BG_VAT,
        ),
    )
}  # fmt: skip
DEFAULT_PLATFORM = PLATFORMS["emag-ro"]
# The sandbox's and earlier versions' short names.
ALIASES = {"ro": "emag-ro", "bg": "emag-bg", "hu": "emag-hu"}


def platform_named(code: str) -> Platform:
    """The platform ``code`` (``emag-bg``; ``bg`` too); ValueError naming the known ones otherwise."""
    key = ALIASES.get(code.strip().lower(), code.strip().lower())
    if key not in PLATFORMS:
        raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}, got {code!r}")
    return PLATFORMS[key]


def platform_of_url(url: str) -> Platform | None:
    """The platform whose official API host ``url`` names, or None (a sandbox, a proxy, a test server)."""
    host = (urlsplit(url).hostname or "").lower()
    for platform in PLATFORMS.values():
        if urlsplit(platform.api_url).hostname == host:
            return platform
    return None


def all_currencies() -> tuple[str, ...]:
    """Every currency any platform has used, and EUR: what a stored offer's currency may be."""
    seen: dict[str, None] = {}
    for platform in PLATFORMS.values():
        for _, currency in platform.currencies:
            seen[currency] = None
    seen[EUR] = None
    return tuple(seen)


def vat_rate_for(
    currency: str | None, vat_id: int | None, platform: Platform | None = None
) -> Decimal | None:
    """The VAT rate of ``vat_id``: the platform's when known, else the one platform whose currency this is
    (EUR names no single platform: None, never a guess)."""
    if vat_id is None:
        return None
    if platform is None:
        owners = {
            p.vat_rates.get(vat_id) for p in PLATFORMS.values() if currency in dict(p.currencies).values()
        }
        if currency is None or currency == EUR or len(owners) != 1:
            return None
        return owners.pop()
    return platform.vat_rates.get(vat_id)
