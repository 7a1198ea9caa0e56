"""The "next page or stop" decision, driven with hand-built page sizes."""

from __future__ import annotations

import pytest

from emag_sync.api.paging import PagePlan, PagingOverrun, check_items_per_page
from emag_sync.limits import MAX_ITEMS_PER_PAGE


def _walk(plan: PagePlan, sizes: dict[int, int]) -> list[int]:
    """Read pages one by one as a sequential reader would; returns the pages read."""
    read, page = [], plan.start_page
    while True:
        assert plan.may_request(page, all_full_through=page - 1)
        read.append(page)
        if plan.is_last(page, sizes.get(page, 0)):
            return read
        page += 1


def test_short_last_page_ends_the_read() -> None:
    plan = PagePlan(items_per_page=100, start_page=1, expected_items=1274)
    assert (plan.expected_last_page, plan.last_allowed_page) == (13, 14)
    sizes = {n: 100 for n in range(1, 13)} | {13: 74}
    assert _walk(plan, sizes) == list(range(1, 14))


def test_exact_multiple_needs_the_empty_page_and_no_more() -> None:
    plan = PagePlan(items_per_page=100, start_page=1, expected_items=1200)
    assert (plan.expected_last_page, plan.last_allowed_page) == (13, 13)
    assert _walk(plan, {n: 100 for n in range(1, 13)}) == list(range(1, 14))


def test_empty_catalogue_reads_one_page() -> None:
    plan = PagePlan(items_per_page=100, start_page=1, expected_items=0)
    assert _walk(plan, {}) == [1]


def test_one_page_of_growth_is_absorbed() -> None:
    plan = PagePlan(items_per_page=100, start_page=1, expected_items=1274)
    sizes = {n: 100 for n in range(1, 14)} | {14: 3}  # 29 records appeared during the read
    assert _walk(plan, sizes) == list(range(1, 15))


def test_full_page_at_the_bound_raises_instead_of_looping() -> None:
    plan = PagePlan(items_per_page=100, start_page=1, expected_items=250)
    assert not plan.is_last(3, 100)  # one page of slack beyond count's 3 pages...
    with pytest.raises(PagingOverrun, match=r"page 4 is still full.*250 records"):
        plan.is_last(4, 100)  # ...but no more
    assert not plan.may_request(5, all_full_through=4)


def test_more_records_than_asked_is_refused() -> None:
    plan = PagePlan(items_per_page=50, start_page=1, expected_items=500)
    with pytest.raises(PagingOverrun, match="more than the 50"):
        plan.is_last(2, 51)


def test_slack_page_is_only_requested_after_every_page_was_full() -> None:
    plan = PagePlan(items_per_page=100, start_page=1, expected_items=1274)
    assert plan.may_request(13, all_full_through=0)  # look-ahead up to the expected end is fine
    assert not plan.may_request(14, all_full_through=12)  # page 13 not seen yet: probably short
    assert plan.may_request(14, all_full_through=13)
    assert not plan.may_request(15, all_full_through=14)


def test_resume_starts_after_the_last_committed_page() -> None:
    plan = PagePlan(items_per_page=100, start_page=9, expected_items=1274)
    sizes = {n: 100 for n in range(1, 13)} | {13: 74}
    assert _walk(plan, sizes) == [9, 10, 11, 12, 13]


def test_resume_past_the_end_reads_one_page() -> None:
    plan = PagePlan(items_per_page=100, start_page=20, expected_items=1274)
    assert plan.last_allowed_page == 20
    assert _walk(plan, {}) == [20]


@pytest.mark.parametrize("size", [0, -1, MAX_ITEMS_PER_PAGE + 1])
def test_page_size_limits(size: int) -> None:
    with pytest.raises(ValueError, match="items_per_page must be between 1 and 100"):
        check_items_per_page(size)
    with pytest.raises(ValueError):
        PagePlan(items_per_page=size, start_page=1, expected_items=10)


def test_start_page_must_be_positive() -> None:
    with pytest.raises(ValueError, match="start_page"):
        PagePlan(items_per_page=100, start_page=0, expected_items=10)


@pytest.mark.parametrize(
    ("numbers", "shown"),
    [
        ([7], "page 7"),
        ([1, 2, 3, 4, 5], "pages 1-5"),
        ([26, 1, 2, 3, 4], "pages 26, 1-4"),  # a resumed read's last page, then the committed ones again
        ([3, 5, 6], "pages 3, 5-6"),
    ],
)
def test_a_batchs_pages_read_as_ranges_in_the_order_read(numbers: list[int], shown: str) -> None:
    from tasks.sync_account import page_ranges

    assert page_ranges(numbers) == shown
