"""The per-account sliding-window limiter and its process-wide registry."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from pydantic import SecretStr

from emag_sync.accounts import Account, AccountType, legacy_account
from emag_sync.api.ratelimit import SlidingWindowLimiter, limiter_for
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
