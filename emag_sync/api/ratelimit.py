"""Per-account request budget: a thread-safe sliding-window limiter shared by every client of one login in a
process, corrected by what eMAG's rate-limit headers say."""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from emag_sync.settings import AccountConfig

logger = logging.getLogger(__name__)

SECOND_WINDOW = 1.0
MINUTE_WINDOW = 60.0
# Our clock is not eMAG's: a request granted at t leaves a little later — later still when a busy process
# (transform, load, an import) keeps the sending thread from the GIL — and an earlier request sent late
# can share eMAG's window with a later one sent on time. Widening our windows by 0.08 s costs ~7% of
# throughput at 3/s (3 per 1.08 s = 2.78/s): it keeps a little headroom above the 90% (2.7/s) the sync must
# sustain, while 0.05 s drew the odd 429 in the demo when the process was busy.
DEFAULT_MARGIN_SECONDS = 0.08
# A request that leaves later than this after its slot is counted from when it left (see ``went``).
LATE_SEND_SECONDS = 0.005

# eMAG's answers (and the sandbox's) carry the login's budget: how many requests its window admits and how
# many are left in it.
LIMIT_HEADER = "X-RateLimit-Limit-3second"
REMAINING_HEADER = "X-RateLimit-Remaining-3second"
# The window those headers are named after. When eMAG says nothing is left although this process sent fewer
# than its limit in the window, another client of the login spends it: nothing more is sent for this long.
HEADER_WINDOW_SECONDS = 3.0


@dataclass(frozen=True)
class BudgetHeaders:
    """What one answer said about the login's budget; None where it said nothing (or nothing readable)."""

    limit: int | None
    remaining: int | None


def budget_headers(headers: Mapping[str, str]) -> BudgetHeaders:
    """The X-RateLimit-*-3second headers of an answer (header names are case-insensitive in httpx)."""

    def number(name: str) -> int | None:
        value = headers.get(name)
        if value is None:
            value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
        try:
            parsed = int(str(value).strip()) if value is not None else None
        except ValueError:
            return None
        return parsed if parsed is not None and parsed >= 0 else None

    return BudgetHeaders(limit=number(LIMIT_HEADER), remaining=number(REMAINING_HEADER))


class Limiter(Protocol):
    """Paces one login's requests: ``acquire`` before each send, ``answered`` after it (answer or not)."""

    def acquire(self) -> float:
        """Block until one more request may be sent; returns when it was let go (``time.monotonic``)."""
        ...

    def went(self, sent: float) -> None:
        """The request let go at ``sent`` leaves now (its thread may have been held up since)."""
        ...

    def answered(self, sent: float, headers: Mapping[str, str]) -> None:
        """The request let go at ``sent`` is over; ``headers`` are its answer's (empty when none came)."""
        ...

    def close(self) -> None:
        """The client using it is closed."""
        ...


class SlidingWindowLimiter:
    """At most ``per_second`` requests in any 1-second window and ``per_minute`` in any 60-second window.

    ``acquire`` computes the earliest allowed start under a lock and reserves it before sleeping, so
    concurrent callers queue up in order instead of racing for the same slot. On waking it checks the
    windows again against the times earlier requests really left (a thread starved of the CPU wakes late,
    and a late request would otherwise share eMAG's window with a later one on time). A fractional ``per_second``
    above 1 is rounded down (never exceed); below 1 it becomes one request per ``1 / per_second`` seconds.
    """

    def __init__(
        self,
        per_second: float,
        per_minute: int,
        *,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        name: str = "eMAG",
    ) -> None:
        if per_second <= 0 or per_minute <= 0:
            raise ValueError(f"rate limits must be positive, got {per_second}/s and {per_minute}/min")
        self.per_second = per_second
        self.per_minute = per_minute
        if per_second >= 1:
            self._short_count, self._short_window = math.floor(per_second), SECOND_WINDOW
        else:
            self._short_count, self._short_window = 1, 1 / per_second
        self._short_window += margin_seconds
        self._long_window = MINUTE_WINDOW + margin_seconds
        self._clock = clock
        self._sleep = sleep
        self.name = name
        # Nothing is sent before this time: eMAG said the window was spent by someone else.
        self._paused_until = -math.inf
        self._lock = threading.Lock()
        # Start times already granted (some may lie in the future), never decreasing.
        self._granted: deque[float] = deque()
        # When granted requests really went: the windows are confirmed against these on waking.
        self._released: deque[float] = deque()

    def __repr__(self) -> str:
        return f"SlidingWindowLimiter(per_second={self.per_second}, per_minute={self.per_minute})"

    def reserve(self) -> float:
        """Reserve the next free slot and return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            while self._granted and self._granted[0] <= now - self._long_window:
                self._granted.popleft()
            start = max(now, self._paused_until, self._granted[-1] if self._granted else now)
            if len(self._granted) >= self._short_count:
                start = max(start, self._granted[-self._short_count] + self._short_window)
            if len(self._granted) >= self.per_minute:
                start = max(start, self._granted[-self.per_minute] + self._long_window)
            self._granted.append(start)
            return start - now

    @property
    def window_seconds(self) -> float:
        """The short window (1 s and the margin at 3/s): a request sent this long ago no longer counts."""
        return self._short_window

    def acquire(self) -> float:
        """Block until this request may be sent; returns when it was let go (``time.monotonic``)."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        while True:
            wait, sent = self._confirm()
            if wait <= 0:
                return sent
            self._sleep(wait)

    def went(self, sent: float) -> None:
        """The request let go at ``sent`` leaves only now: when that is later than LATE_SEND_SECONDS, it counts
        in the windows from now, so the next requests wait for it as eMAG will have counted it."""
        with self._lock:
            now = self._clock()
            if now - sent <= LATE_SEND_SECONDS:
                return
            try:
                self._released.remove(sent)
            except ValueError:  # already out of the minute's window
                return
            bisect.insort(self._released, now)

    def answered(self, sent: float, headers: Mapping[str, str]) -> None:
        """Take in eMAG's view of the budget from an answer to the request let go at ``sent``.

        A Limit below this limiter's per-window count lowers the pace for good (eMAG knows the login's real
        rate). Remaining 0 is expected at full pace (the last request of each window sees it); it matters only
        when this process sent fewer than the limit around ``sent``: another client of the login spends the
        budget, so nothing more leaves before eMAG's whole window has passed.
        """
        budget = budget_headers(headers)
        with self._lock:
            if budget.limit is not None and 0 < budget.limit < self._short_count:
                logger.warning(
                    "%s: eMAG allows %d requests per window, fewer than the configured %s/s; pacing at %d",
                    self.name,
                    budget.limit,
                    self.per_second,
                    budget.limit,
                )
                self._short_count = budget.limit
            if budget.remaining == 0:
                # Ours that eMAG may have counted with it: sent a window before it, up to its answer (which
                # came after its arrival; ours sent meanwhile may have arrived first).
                now = self._clock()
                own = sum(1 for t in self._released if sent - self._short_window < t <= now)
                if own < self._short_count:
                    logger.info(
                        "%s: eMAG says the login's budget is spent, not by this process; pausing %.0f s",
                        self.name,
                        HEADER_WINDOW_SECONDS,
                    )
                    self._paused_until = max(self._paused_until, sent + HEADER_WINDOW_SECONDS)

    def close(self) -> None:
        """Nothing to release: the limiter lives as long as the process."""

    def _confirm(self) -> tuple[float, float]:
        """Record this request as sent now (0, now), or how much longer it must wait given when others really
        went (wait, now)."""
        with self._lock:
            now = self._clock()
            sent = self._released
            while sent and sent[0] <= now - self._long_window:
                sent.popleft()
            earliest = max(now, self._paused_until)
            if len(sent) >= self._short_count:
                earliest = max(earliest, sent[-self._short_count] + self._short_window)
            if len(sent) >= self.per_minute:
                earliest = max(earliest, sent[-self.per_minute] + self._long_window)
            if earliest > now:
                return earliest - now, now
            sent.append(now)
            return 0.0, now


_registry: dict[tuple[str, str], SlidingWindowLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(config: AccountConfig) -> SlidingWindowLimiter:
    """The process-wide limiter of this login (API URL + username): one shared budget.

    eMAG counts every call of a login together, so all clients of one account, and of accounts registered
    with the same login on one platform, draw from the same limiter; two logins never share one. If the
    configured rates change, later clients get a fresh limiter with the new rates.
    """
    key = (config.api_url.rstrip("/"), config.username)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None or (limiter.per_second, limiter.per_minute) != (
            config.requests_per_second,
            config.requests_per_minute,
        ):
            if limiter is not None:
                logger.warning(
                    "%s: rate limit changed to %s/s, %s/min; new clients use a new budget",
                    config.account.name,
                    config.requests_per_second,
                    config.requests_per_minute,
                )
            limiter = SlidingWindowLimiter(
                config.requests_per_second, config.requests_per_minute, name=config.account.title
            )
            _registry[key] = limiter
        return limiter
