"""Platform facts: one table, and Bulgaria's currency changing on 2026-01-01."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from emag_sync.platforms import PLATFORMS, all_currencies, platform_named, platform_of_url, vat_rate_for


def test_the_five_platforms_of_the_document() -> None:
    assert list(PLATFORMS) == ["emag-ro", "emag-bg", "emag-hu", "fd-ro", "fd-bg"]
    assert {p.api_url.rsplit("/", 1)[1] for p in PLATFORMS.values()} == {"api-3"}
    assert platform_of_url("https://marketplace-bg-api.fashiondays.com/api-3/") is PLATFORMS["fd-bg"]
    assert platform_of_url("http://127.0.0.1:8765/api-3") is None


@pytest.mark.parametrize("code", ["emag-bg", "fd-bg"])
def test_bulgaria_prices_in_eur_from_2026(code: str) -> None:
    platform = PLATFORMS[code]
    assert platform.currency_on(date(2025, 12, 31)) == "BGN"
    assert platform.currency_on(date(2026, 1, 1)) == "EUR"
    assert platform.accepted_currencies(date(2026, 6, 1)) == ("EUR",)
    assert platform.accepted_currencies(date(2025, 6, 1)) == ("BGN", "EUR")
    assert PLATFORMS["emag-hu"].accepted_currencies(date(2026, 6, 1)) == ("HUF", "EUR")


def test_vat_rates_are_never_guessed() -> None:
    assert vat_rate_for("RON", 1) == Decimal("0.21") and vat_rate_for("HUF", 2) == Decimal("0.05")
    assert vat_rate_for("EUR", 1) is None  # EUR names no single platform
    assert vat_rate_for("EUR", 1, PLATFORMS["emag-bg"]) == Decimal("0.20")
    assert vat_rate_for("RON", 9) is None and vat_rate_for(None, 1) is None
    assert set(all_currencies()) == {"RON", "BGN", "EUR", "HUF"}


def test_platform_names() -> None:
    assert platform_named("BG") is PLATFORMS["emag-bg"] and platform_named("fd-ro") is PLATFORMS["fd-ro"]
    with pytest.raises(
        ValueError, match="platform must be one of emag-ro, emag-bg, emag-hu, fd-ro, fd-bg, got 'pl'"
    ):
        platform_named("pl")
