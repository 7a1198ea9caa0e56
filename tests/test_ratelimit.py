"""The per-login sliding-window limiter, its process-wide registry, and what eMAG's rate-limit headers tell it."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest
from pydantic import SecretStr

from emag_sync.accounts import Account, AccountType, legacy_account
from emag_sync.api.client import EmagClient
from emag_sync.api.ratelimit import BudgetHeaders, SlidingWindowLimiter, budget_headers, limiter_for
from emag_sync.settings import AccountConfig


class FakeClock:
    """A clock that only moves when the limiter sleeps, so waits can be checked exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _starts(limiter: SlidingWindowLimiter, clock: FakeClock, calls: int) -> list[float]:
    starts = []
    for _ in range(calls):
        limiter.acquire()
        starts.append(clock.now)
    return starts


def _max_in_window(starts: list[float], window: float) -> int:
    ordered = sorted(starts)
    return max(sum(1 for t in ordered if s <= t < s + window) for s in ordered)


def test_bursts_up_to_per_second_then_waits_a_full_window() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0, clock=clock, sleep=clock.sleep)
    assert _starts(limiter, clock, 9) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_per_minute_budget_is_enforced_too() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(10, 25, margin_seconds=0, clock=clock, sleep=clock.sleep)
    starts = _starts(limiter, clock, 60)
    assert _max_in_window(starts, 1.0) <= 10
    assert _max_in_window(starts, 60.0) <= 25
    assert starts[25] == pytest.approx(60.0)  # the 26th request waits for the first to leave the minute


def test_never_exceeds_either_window_with_irregular_callers() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0.05, clock=clock, sleep=clock.sleep)
    starts = []
    for i in range(400):
        clock.now += (i % 7) * 0.11  # callers arrive unevenly, sometimes idle
        limiter.acquire()
        starts.append(clock.now)
    assert _max_in_window(starts, 1.0) <= 3
    assert _max_in_window(starts, 60.0) <= 180


def test_fractional_rates() -> None:
    clock = FakeClock()
    slow = SlidingWindowLimiter(0.5, 180, margin_seconds=0, clock=clock, sleep=clock.sleep)
    assert _starts(slow, clock, 3) == [0, 2, 4]
    clock = FakeClock()
    odd = SlidingWindowLimiter(2.5, 180, margin_seconds=0, clock=clock, sleep=clock.sleep)
    assert _starts(odd, clock, 4) == [0, 0, 1, 1]  # rounded down: never above the configured rate


def test_concurrent_callers_each_get_their_own_slot() -> None:
    """Forty threads reserve at once against a frozen clock: the slots must come out exactly 3 per second."""
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0, clock=lambda: 100.0)
    waits: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(40)

    def take() -> None:
        barrier.wait()
        wait = limiter.reserve()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    per_second = Counter(round(w) for w in waits)
    assert all(count == 3 for second, count in per_second.items() if second < 13)
    assert sorted(waits) == sorted(float(i // 3) for i in range(40))


def test_rejects_non_positive_limits() -> None:
    with pytest.raises(ValueError, match="positive"):
        SlidingWindowLimiter(0, 180)


def _config(account: Account, *, url: str = "http://sandbox/api-3", user: str = "u", rps: float = 3.0):
    return AccountConfig(
        account=account, username=user, password=SecretStr("pw"), api_url=url, requests_per_second=rps
    )


def test_limiter_for_shares_one_budget_per_login() -> None:
    """One budget per login (API URL + username): every client of an account, and accounts registered
    with the same login, share it; two logins never do."""
    main = limiter_for(_config(legacy_account(AccountType.MAIN), url="http://shared-test/api-3"))
    assert limiter_for(_config(legacy_account(AccountType.MAIN), url="http://shared-test/api-3/")) is main
    same_login = Account("ro-main-2", AccountType.MAIN)
    assert limiter_for(_config(same_login, url="http://shared-test/api-3")) is main
    assert (
        limiter_for(_config(legacy_account(AccountType.FBE), url="http://shared-test/api-3", user="f"))
        is not main
    )
    assert limiter_for(_config(legacy_account(AccountType.MAIN), url="http://other-host/api-3")) is not main
    assert (
        limiter_for(_config(legacy_account(AccountType.MAIN), url="http://shared-test/api-3", user="v"))
        is not main
    )


def test_limiter_for_follows_a_changed_rate() -> None:
    first = limiter_for(_config(legacy_account(AccountType.MAIN), url="http://rate-change/api-3", rps=3))
    second = limiter_for(_config(legacy_account(AccountType.MAIN), url="http://rate-change/api-3", rps=12))
    assert second is not first and isinstance(second, SlidingWindowLimiter) and second.per_second == 12


def test_a_request_that_left_late_pushes_back_the_next_window() -> None:
    """A thread starved of the CPU wakes after its slot: the window is confirmed against when it really went."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0.0, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        limiter.acquire()  # t = 0, 0
    wait = limiter.reserve()  # the third of the window, planned at t = 0 ...
    assert wait == 0
    clock.now += 0.4  # ... but its thread only got to send at t = 0.4
    limiter._confirm()
    # The next window's three were planned for t = 1.0; the third of them would share [0.4, 1.4) with the
    # late request and two others, so it waits until t = 1.4.
    assert _starts(limiter, clock, 3) == pytest.approx([1.0, 1.0, 1.4])


# --- eMAG's X-RateLimit-*-3second headers -------------------------------------------------------------


def _answer(limit: str | None, remaining: str | None) -> httpx.Response:
    headers = {}
    if limit is not None:
        headers["X-RateLimit-Limit-3second"] = limit
    if remaining is not None:
        headers["X-RateLimit-Remaining-3second"] = remaining
    return httpx.Response(200, headers=headers, json={"isError": False, "messages": [], "results": []})


def test_budget_headers_are_read_case_insensitively_and_garbage_is_nothing() -> None:
    assert budget_headers(_answer("3", "0").headers) == BudgetHeaders(limit=3, remaining=0)
    assert budget_headers({"x-ratelimit-limit-3second": " 2 "}) == BudgetHeaders(limit=2, remaining=None)
    assert budget_headers(_answer(None, None).headers) == BudgetHeaders(limit=None, remaining=None)
    assert budget_headers(_answer("many", "-1").headers) == BudgetHeaders(limit=None, remaining=None)


def test_a_lower_limit_from_emag_lowers_the_pace() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0, clock=clock, sleep=clock.sleep)
    sent = limiter.acquire()
    limiter.answered(sent, _answer("2", "1").headers)
    assert [sent, *_starts(limiter, clock, 5)] == [0, 0, 1, 1, 2, 2]
    limiter.answered(clock.now, _answer("5", "4").headers)  # a higher one never raises it
    assert _starts(limiter, clock, 2) == [3, 3]


def test_remaining_zero_after_our_own_full_window_changes_nothing() -> None:
    """At full pace the last request of each window is answered remaining 0: the window was ours."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0, clock=clock, sleep=clock.sleep)
    starts = []
    for remaining in ["2", "1", "0"] * 2:
        sent = limiter.acquire()
        starts.append(sent)
        limiter.answered(sent, _answer("3", remaining).headers)
    assert starts == [0, 0, 0, 1, 1, 1]


def test_remaining_zero_that_is_not_ours_pauses_a_whole_window() -> None:
    """eMAG says the budget is spent after one request of ours: another client of the login spends it, so
    nothing leaves before eMAG's 3-second window has passed."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0, clock=clock, sleep=clock.sleep)
    clock.now = 10.0
    sent = limiter.acquire()
    clock.now = 10.2  # its answer
    limiter.answered(sent, _answer("3", "0").headers)
    assert _starts(limiter, clock, 4) == [13.0, 13.0, 13.0, 14.0]


def test_the_client_feeds_every_answer_to_its_limiter() -> None:
    """The client reads eMAG's budget headers in one place: an answer saying Limit 1 paces the next ones."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0, clock=clock, sleep=clock.sleep)
    count = {"noOfItems": "1", "noOfPages": "1", "itemsPerPage": "100"}
    answer = httpx.Response(
        200,
        headers={"X-RateLimit-Limit-3second": "1", "X-RateLimit-Remaining-3second": "0"},
        json={"isError": False, "messages": [], "results": count},
    )
    config = _config(legacy_account(AccountType.FBE), url="http://mock.test/api-3")
    starts = []
    transport = httpx.MockTransport(lambda request: starts.append(clock.now) or answer)
    with EmagClient(config, limiter=limiter, transport=transport) as client:
        for _ in range(3):
            client.count()
    assert starts == [0, 1, 2]


def test_a_request_that_leaves_late_counts_from_when_it_left() -> None:
    """The client says when a request really leaves (``went``): a thread held up 0.3 s after its slot pushes
    back the request that would share eMAG's window with it."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, 180, margin_seconds=0.0, clock=clock, sleep=clock.sleep)
    first = [limiter.acquire() for _ in range(3)]
    assert first == [0, 0, 0]
    clock.now = 0.3
    limiter.went(first[0])
    assert _starts(limiter, clock, 3) == pytest.approx([1.0, 1.0, 1.3])
    limiter.went(clock.now)  # on time: nothing moves
    assert _starts(limiter, clock, 1) == pytest.approx([2.0])
