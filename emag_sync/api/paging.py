"""The "next page or stop" decision for eMAG's offset paging, as one small pure piece."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from emag_sync.limits import MAX_ITEMS_PER_PAGE

# The page number of an offer read by id, outside the catalogue's paging (see EmagClient.read_by_id).
BY_ID = 0


@dataclass(frozen=True)
class Page:
    """One page of a read: its number (from 1; BY_ID for one offer read by id), the raw records eMAG
    returned, and when its request left: a price pushed and confirmed after that is newer than this page."""

    number: int
    records: list[dict[str, Any]]
    read_at: datetime


@dataclass(frozen=True)
class CatalogueCount:
    """``product_offer/count`` as integers (eMAG sends them as strings)."""

    items: int
    pages: int
    items_per_page: int


class PagingOverrun(Exception):
    """A page at the bound came back full: more records than ``count`` announced, plus one page of slack."""


def check_items_per_page(items_per_page: int) -> int:
    """Refuse page sizes eMAG would refuse, before any request."""
    if not 1 <= items_per_page <= MAX_ITEMS_PER_PAGE:
        raise ValueError(f"items_per_page must be between 1 and {MAX_ITEMS_PER_PAGE}, got {items_per_page}")
    return items_per_page


@dataclass(frozen=True)
class PagePlan:
    """Which pages a read may request, from ``count`` taken just before it.

    eMAG's ``read`` has no total, so the last page is the first short (or empty) one. Offset paging has no
    snapshot, so the catalogue may grow while we read; one page beyond ``count`` absorbs that. A full page
    at that bound means the read would not end where ``count`` said: raise rather than read on, because a
    silently truncated read would later mark unread offers as missing.
    """

    items_per_page: int
    start_page: int
    expected_items: int
    # The read's last page when it covers only the start of the catalogue (a resume's second pass).
    stop_page: int | None = None

    def __post_init__(self) -> None:
        check_items_per_page(self.items_per_page)
        if self.start_page < 1:
            raise ValueError(f"start_page must be >= 1, got {self.start_page}")
        if self.stop_page is not None and self.stop_page < self.start_page:
            raise ValueError(f"stop_page {self.stop_page} is before start_page {self.start_page}")
        if self.expected_items < 0:
            raise ValueError(f"expected_items must be >= 0, got {self.expected_items}")

    @property
    def expected_last_page(self) -> int:
        """The page expected to come back short or empty if the catalogue does not change."""
        return max(self.expected_items // self.items_per_page + 1, self.start_page)

    @property
    def last_allowed_page(self) -> int:
        """``count``'s pages plus one: no page beyond it is ever requested."""
        pages = -(-self.expected_items // self.items_per_page)
        return max(pages + 1, self.start_page)

    def may_request(self, page: int, *, all_full_through: int) -> bool:
        """Whether ``page`` may be requested yet, given pages up to ``all_full_through`` came back full.

        Pages up to the expected last one are requested ahead; the one slack page only once every page
        before it was full, so a normal read never spends a request beyond its end.
        """
        if page > self.last_allowed_page or (self.stop_page is not None and page > self.stop_page):
            return False
        return page <= self.expected_last_page or all_full_through >= page - 1

    def is_last(self, page: int, record_count: int) -> bool:
        """True when ``page`` ends the read; raises ``PagingOverrun`` when a full page hits the bound."""
        if record_count > self.items_per_page:
            raise PagingOverrun(
                f"page {page} has {record_count} records, more than the {self.items_per_page} asked for"
            )
        if record_count < self.items_per_page or page == self.stop_page:
            return True
        if page >= self.last_allowed_page:
            raise PagingOverrun(
                f"page {page} is still full although count announced {self.expected_items} records "
                f"({self.last_allowed_page - 1} pages of {self.items_per_page}); the catalogue grew during "
                "the read or eMAG ignores currentPage. Nothing past this page was read; rerun the sync"
            )
        return False
