"""The eMAG Marketplace API client: one per account, owning HTTP, auth, pacing, retries and the envelope."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx

from emag_sync.errors import (
    EmagApiError,
    EmagAuthError,
    EmagBusinessError,
    EmagPagingError,
    EmagRequestError,
    EmagResponseFormatError,
    EmagUnavailableError,
    EmagUncertainWriteError,
)
from emag_sync.settings import AccountConfig
from tasks.paging import (
    MAX_ITEMS_PER_PAGE,
    CatalogueCount,
    Page,
    PagePlan,
    PagingOverrun,
    check_items_per_page,
)
from tasks.ratelimit import Limiter, limiter_for

__all__ = [
    "MAX_ENTITIES_PER_SAVE",
    "MAX_ITEMS_PER_PAGE",
    "CallSite",
    "CatalogueCount",
    "ClientStats",
    "EmagClient",
    "Envelope",
    "Page",
    "StatsSnapshot",
    "Verdict",
    "classify",
    "parse_count",
    "redact_headers",
]

logger = logging.getLogger(__name__)

MAX_ENTITIES_PER_SAVE = 50  # eMAG section 1.5: bulk saves take at most 50 entities per request
MAX_OFFER_ID = 4_294_967_295  # eMAG: the seller's product id is an integer between 1 and 4294967295
DEFAULT_LOOK_AHEAD = 8  # pages in flight: covers 3 requests/s x ~2 s responses with room to spare
BODY_PREVIEW_BYTES = 200  # how much of an unreadable body an error shows
RETRY_AFTER_CAP_SECONDS = 120.0  # a Retry-After beyond this is not worth hanging a run for
CONNECT_TIMEOUT_SECONDS = 10.0
READ_ACTIONS = frozenset({"read", "count"})
REDACTED = "[redacted]"
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


@dataclass(frozen=True)
class CallSite:
    """Where a call went, for error messages: account label, ``resource/action``, page, payload subject."""

    account: str
    resource: str
    page: int | None = None
    subject: str | None = None

    def error(
        self,
        cls: type[EmagApiError],
        reason: str,
        *,
        status_code: int | None = None,
        messages: Sequence[object] = (),
    ) -> EmagApiError:
        message = f"{self.subject}: {reason}" if self.subject else reason
        return cls(
            message,
            account=self.account,
            resource=self.resource,
            page=self.page,
            status_code=status_code,
            messages=messages,
        )


@dataclass(frozen=True)
class Envelope:
    """An accepted eMAG answer: ``isError`` was false."""

    results: Any
    messages: list[Any]


@dataclass(frozen=True)
class Verdict:
    """The one classification of one attempt: an envelope, or an error that is retriable or fatal."""

    envelope: Envelope | None = None
    error: EmagApiError | None = None
    reason: str = ""
    retriable: bool = False
    # eMAG certainly did not act on the request (refused it, or it was never sent): safe to resend a write.
    not_processed: bool = False
    retry_after: float | None = None
    status_code: int | None = None


def classify(outcome: httpx.Response | httpx.TransportError, site: CallSite) -> Verdict:
    """Sort one attempt's outcome: HTTP status first, then eMAG's envelope. The only place errors are sorted."""
    if isinstance(outcome, httpx.TransportError):
        return _classify_transport_error(outcome, site)
    status = outcome.status_code
    if status == httpx.codes.TOO_MANY_REQUESTS:
        # eMAG's 429 body is {"message": ...} without isError; it is a refusal, so nothing was processed.
        reason = "rate limited (HTTP 429)"
        return Verdict(
            error=site.error(
                EmagUnavailableError, reason, status_code=status, messages=_body_messages(outcome)
            ),
            reason=reason,
            retriable=True,
            not_processed=True,
            retry_after=parse_retry_after(outcome.headers.get("Retry-After")),
            status_code=status,
        )
    if status >= 500:
        reason = f"eMAG answered HTTP {status}"
        return Verdict(
            error=site.error(
                EmagUnavailableError, reason, status_code=status, messages=_body_messages(outcome)
            ),
            reason=reason,
            retriable=True,
            not_processed=status == httpx.codes.SERVICE_UNAVAILABLE,
            status_code=status,
        )
    if status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
        reason = (
            f"eMAG refused the credentials (HTTP {status}); check the account's username and password "
            "and that this machine's IP is whitelisted"
        )
        return _fatal(site, EmagAuthError, reason, status, _body_messages(outcome))
    if status >= 400:
        reason = f"eMAG refused the request (HTTP {status})"
        return _fatal(site, EmagRequestError, reason, status, _body_messages(outcome))
    if status >= 300 or status < 200:
        reason = (
            f"unexpected HTTP {status} (location: {outcome.headers.get('Location', '-')}); check the API URL"
        )
        return _fatal(site, EmagRequestError, reason, status, ())
    return _classify_envelope(outcome, site)


def _fatal(
    site: CallSite, cls: type[EmagApiError], reason: str, status: int | None, messages: Sequence[object]
) -> Verdict:
    return Verdict(
        error=site.error(cls, reason, status_code=status, messages=messages),
        reason=reason,
        status_code=status,
    )


def _classify_transport_error(exc: httpx.TransportError, site: CallSite) -> Verdict:
    kind = type(exc).__name__
    if isinstance(exc, httpx.UnsupportedProtocol):
        return _fatal(site, EmagRequestError, f"cannot call the API URL: {exc}", None, ())
    # Connecting (or waiting for a pooled connection) fails before a byte is sent; anything later may have
    # reached eMAG, so a write that failed that way has an unknown outcome.
    before_sending = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    reason = f"{kind}: {exc}" if str(exc) else kind
    return Verdict(
        error=site.error(EmagUnavailableError, reason),
        reason=reason,
        retriable=True,
        not_processed=before_sending,
    )


def _classify_envelope(response: httpx.Response, site: CallSite) -> Verdict:
    status = response.status_code
    try:
        body = json.loads(response.content)
    except ValueError:
        reason = f"the answer is not JSON (HTTP {status}): {_preview(response)}"
        return _fatal(site, EmagResponseFormatError, reason, status, ())
    if not isinstance(body, dict) or not isinstance(body.get("isError"), bool):
        reason = (
            f"the answer is not an eMAG envelope with a boolean isError (HTTP {status}): {_preview(response)}"
        )
        return _fatal(site, EmagResponseFormatError, reason, status, ())
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        messages = [messages]
    if body["isError"]:
        reason = "eMAG answered isError: true"
        return _fatal(site, EmagBusinessError, reason, status, messages)
    return Verdict(envelope=Envelope(results=body.get("results"), messages=messages), status_code=status)


def _preview(response: httpx.Response) -> str:
    head = response.content[:BODY_PREVIEW_BYTES].decode("utf-8", errors="replace")
    more = "…" if len(response.content) > BODY_PREVIEW_BYTES else ""
    return repr(head) + more


def _body_messages(response: httpx.Response) -> list[object]:
    """eMAG's text from an error body ({"messages": [...]}, {"message": "..."}), else its first bytes."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return [_preview(response)] if response.content else []
    if isinstance(body, dict):
        if body.get("messages"):
            found = body["messages"]
            return list(found) if isinstance(found, list) else [found]
        if body.get("message"):
            return [body["message"]]
    return [_preview(response)]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None when absent/unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def parse_count(results: Any, site: CallSite) -> CatalogueCount:
    """``product_offer/count`` results to integers; eMAG sends them as strings ("1274")."""
    if not isinstance(results, dict):
        raise site.error(EmagResponseFormatError, f"count results are not an object: {results!r:.200}")
    values: dict[str, int] = {}
    for name in ("noOfItems", "noOfPages", "itemsPerPage"):
        raw = results.get(name)
        number: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, str) and raw.strip().isdigit():
            number = int(raw.strip())
        if number is None or number < 0:
            raise site.error(
                EmagResponseFormatError, f"count field {name} is not a whole number: {raw!r:.100}"
            )
        values[name] = number
    return CatalogueCount(
        items=values["noOfItems"], pages=values["noOfPages"], items_per_page=values["itemsPerPage"]
    )


def redact_headers(headers: httpx.Headers | Mapping[str, str]) -> dict[str, str]:
    """Headers safe to log: credentials replaced by a marker."""
    return {name: REDACTED if name.lower() in SENSITIVE_HEADERS else value for name, value in headers.items()}


def _log_request(request: httpx.Request) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("sending %s %s headers=%s", request.method, request.url, redact_headers(request.headers))


@dataclass(frozen=True)
class StatsSnapshot:
    """Counters at one moment, for the run history."""

    requests: int
    retries: int
    rate_limited: int
    by_status: dict[str, int]


@dataclass
class ClientStats:
    """Thread-safe counters: requests sent, retries, 429s received, outcomes by HTTP status or error kind."""

    _requests: int = 0
    _retries: int = 0
    _rate_limited: int = 0
    _by_status: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, outcome: str) -> None:
        with self._lock:
            self._requests += 1
            self._by_status[outcome] = self._by_status.get(outcome, 0) + 1
            if outcome == str(int(httpx.codes.TOO_MANY_REQUESTS)):
                self._rate_limited += 1

    def record_retry(self) -> None:
        with self._lock:
            self._retries += 1

    @property
    def requests(self) -> int:
        return self._requests

    @property
    def retries(self) -> int:
        return self._retries

    @property
    def rate_limited(self) -> int:
        return self._rate_limited

    @property
    def by_status(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_status)

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(self._requests, self._retries, self._rate_limited, dict(self._by_status))


class _Cancelled(Exception):
    """A look-ahead page request dropped because the read already ended."""


class EmagClient:
    """One eMAG account: Basic auth, pacing through the account's shared limiter, retries, envelope check.

    ``transport`` lets tests hand in the sandbox; ``limiter`` defaults to the account's process-wide one;
    ``sleep`` and ``jitter`` replace backoff's waiting and randomness (tests make them instant or fixed);
    ``look_ahead`` is how many page requests ``iter_pages`` keeps in flight.
    """

    def __init__(
        self,
        config: AccountConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        limiter: Limiter | None = None,
        look_ahead: int = DEFAULT_LOOK_AHEAD,
        sleep: Callable[[float], None] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if look_ahead < 1:
            raise ValueError(f"look_ahead must be >= 1, got {look_ahead}")
        self.config = config
        self.account = config.account.label
        self.stats = ClientStats()
        self._limiter = limiter if limiter is not None else limiter_for(config)
        self._look_ahead = look_ahead
        self._sleep = sleep
        self._jitter = jitter
        self._http = httpx.Client(
            base_url=config.api_url,
            auth=httpx.BasicAuth(config.username, config.password.get_secret_value()),
            timeout=httpx.Timeout(
                config.timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, config.timeout_seconds)
            ),
            headers={"Accept": "application/json", "User-Agent": "emag-sync"},
            transport=transport,
            event_hooks={"request": [_log_request]},
        )

    def __repr__(self) -> str:
        return f"EmagClient(account={self.account}, api_url={self.config.api_url!r})"

    def __enter__(self) -> EmagClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- reads -------------------------------------------------------------------------------------------

    def count(self, filters: Mapping[str, Any] | None = None) -> CatalogueCount:
        """How many offers match ``filters`` (``product_offer/count``), as integers."""
        data = {**(filters or {}), "itemsPerPage": MAX_ITEMS_PER_PAGE}
        envelope = self._send("product_offer", "count", data)
        return parse_count(envelope.results, CallSite(self.account, "product_offer/count"))

    def iter_pages(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        items_per_page: int = MAX_ITEMS_PER_PAGE,
        start_page: int = 1,
        count: CatalogueCount | None = None,
    ) -> Generator[Page, None, None]:
        """Pages of ``product_offer/read`` in order, from ``start_page`` until a short or empty page.

        Calls ``count`` first (unless the caller just did and passes it, saving a request of the
        account's budget) and never asks beyond its pages plus one; a full page there raises
        ``EmagPagingError`` (see ``PagePlan``). Up to ``look_ahead`` requests overlap, paced by the limiter;
        at most that many pages wait in memory. The first failing page (in page order) raises after every
        page before it was yielded; closing the iterator drops the requests still queued.
        """
        check_items_per_page(items_per_page)
        if start_page < 1:
            raise ValueError(f"start_page must be >= 1, got {start_page}")
        return self._pages(dict(filters or {}), items_per_page, start_page, count)

    def _pages(
        self, filters: dict[str, Any], items_per_page: int, start_page: int, count: CatalogueCount | None
    ) -> Generator[Page, None, None]:
        total = count if count is not None else self.count(filters)
        plan = PagePlan(items_per_page=items_per_page, start_page=start_page, expected_items=total.items)
        logger.debug("%s: %d offers announced, reading from page %d", self.account, total.items, start_page)
        cancel = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self._look_ahead, thread_name_prefix=f"emag-{self.account}")
        pending: deque[tuple[int, Future[list[dict[str, Any]]]]] = deque()
        next_page = start_page
        full_through = start_page - 1

        def top_up() -> None:
            nonlocal next_page
            while len(pending) < self._look_ahead and plan.may_request(
                next_page, all_full_through=full_through
            ):
                future = pool.submit(self._read_page, filters, next_page, items_per_page, cancel)
                pending.append((next_page, future))
                next_page += 1

        try:
            top_up()
            while pending:
                number, future = pending.popleft()
                records = future.result()
                try:
                    last = plan.is_last(number, len(records))
                except PagingOverrun as exc:
                    site = CallSite(self.account, "product_offer/read", number)
                    raise site.error(EmagPagingError, str(exc)) from None
                if not last:
                    full_through = number
                    top_up()
                yield Page(number=number, records=records)
                if last:
                    return
        finally:
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _read_page(
        self, filters: dict[str, Any], number: int, items_per_page: int, cancel: threading.Event
    ) -> list[dict[str, Any]]:
        data = {**filters, "currentPage": number, "itemsPerPage": items_per_page}
        envelope = self._send("product_offer", "read", data, page=number, cancel=cancel)
        return self._records(envelope.results, CallSite(self.account, "product_offer/read", number))

    @staticmethod
    def _records(results: Any, site: CallSite) -> list[dict[str, Any]]:
        # Only a page that is not a list is unreadable as a whole. A record in it that is not an object is
        # the transform's to reject by name: failing the page for it would stop every sync of the account.
        if not isinstance(results, list):
            raise site.error(
                EmagResponseFormatError, f"read results are not a list of records: {results!r:.200}"
            )
        return results

    def read_offer(self, emag_id: int) -> dict[str, Any] | None:
        """The current record of one offer by eMAG id (``product_offer/read`` filtered by id), or None."""
        data = {"id": emag_id, "currentPage": 1, "itemsPerPage": MAX_ITEMS_PER_PAGE}
        envelope = self._send("product_offer", "read", data, subject=f"offer id {emag_id}")
        records = self._records(envelope.results, CallSite(self.account, "product_offer/read"))
        return next((r for r in records if isinstance(r, dict) and str(r.get("id")) == str(emag_id)), None)

    # --- writes ------------------------------------------------------------------------------------------

    def save_offers(self, entities: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Update existing offers with the light offer API (``offer/save``), at most 50 per request.

        Returns one ``{"ids", "messages", "results"}`` per chunk. A failing chunk raises with the chunk's
        ids (``chunk_ids``) and the ids of chunks already saved (``saved_ids``); later chunks are not sent.
        """
        ids = [_offer_id(entity, index) for index, entity in enumerate(entities)]
        chunks = range(0, len(entities), MAX_ENTITIES_PER_SAVE)
        saved: list[int] = []
        answers: list[dict[str, Any]] = []
        for number, start in enumerate(chunks, start=1):
            chunk_ids = ids[start : start + MAX_ENTITIES_PER_SAVE]
            subject = f"chunk {number}/{len(chunks)} (offer ids {', '.join(map(str, chunk_ids))})"
            if saved:
                subject += f", after chunks 1-{number - 1} were saved"
            payload = [dict(entity) for entity in entities[start : start + MAX_ENTITIES_PER_SAVE]]
            try:
                envelope = self._send("offer", "save", payload, subject=subject, write=True)
            except EmagApiError as exc:
                exc.saved_ids = list(saved)
                exc.chunk_ids = list(chunk_ids)
                raise
            saved.extend(chunk_ids)
            answers.append({"ids": chunk_ids, "messages": envelope.messages, "results": envelope.results})
            logger.debug("%s: offer/save chunk %d/%d accepted", self.account, number, len(chunks))
        return answers

    # --- the one request path ----------------------------------------------------------------------------

    def call(self, resource: str, action: str, data: Any, *, page: int | None = None) -> Any:
        """``POST {base}/{resource}/{action}`` with ``{"data": data}``; returns ``results``.

        Actions other than read/count are treated as writes (never resent once they may have arrived).
        """
        return self._send(resource, action, data, page=page, write=action not in READ_ACTIONS).results

    def _send(
        self,
        resource: str,
        action: str,
        data: Any,
        *,
        page: int | None = None,
        subject: str | None = None,
        write: bool = False,
        cancel: threading.Event | None = None,
    ) -> Envelope:
        site = CallSite(self.account, f"{resource}/{action}", page, subject)
        attempts = self.config.max_attempts
        for attempt in range(1, attempts + 1):
            self._limiter.acquire()
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            verdict = self._attempt(site, data)
            if verdict.envelope is not None:
                return verdict.envelope
            assert verdict.error is not None
            if (
                write
                and isinstance(verdict.error, EmagResponseFormatError)
                and verdict.status_code in range(200, 300)
            ):
                # eMAG (or a proxy) said 2xx but the body is unreadable: the save may well have been applied.
                raise site.error(
                    EmagUncertainWriteError,
                    f"the write was answered HTTP {verdict.status_code} but the answer cannot be read "
                    f"({verdict.reason}); it may have been applied: re-read these offers before trying again",
                    status_code=verdict.status_code,
                ) from verdict.error
            if not verdict.retriable:
                raise verdict.error
            if write and not verdict.not_processed:
                raise site.error(
                    EmagUncertainWriteError,
                    f"the write was sent but failed before eMAG confirmed it ({verdict.reason}); it may or may "
                    "not have been applied, so it is not resent: re-read these offers before trying again",
                    status_code=verdict.status_code,
                    messages=verdict.error.messages,
                ) from verdict.error
            if attempt == attempts:
                raise site.error(
                    EmagUnavailableError,
                    f"gave up after {attempts} attempts; last failure: {verdict.reason}",
                    status_code=verdict.status_code,
                    messages=verdict.error.messages,
                ) from verdict.error
            delay = self._backoff(attempt, verdict.retry_after)
            self.stats.record_retry()
            logger.warning(
                "%s: %s%s: %s; retry %d/%d in %.2f s",
                self.account,
                site.resource,
                f" page {page}" if page is not None else "",
                verdict.reason,
                attempt,
                attempts - 1,
                delay,
            )
            self._pause(delay, cancel)
        raise AssertionError("unreachable: the loop returns or raises")

    def _attempt(self, site: CallSite, data: Any) -> Verdict:
        started = time.monotonic()
        try:
            response = self._http.post(site.resource, json={"data": data})
        except httpx.TransportError as exc:
            self.stats.record(type(exc).__name__)
            verdict = classify(exc, site)
            logger.debug(
                "%s: %s failed after %.2f s: %s", self.account, site.resource, _since(started), verdict.reason
            )
            return verdict
        self.stats.record(str(response.status_code))
        logger.debug(
            "%s: %s%s: HTTP %d in %.2f s",
            self.account,
            site.resource,
            f" page {site.page}" if site.page is not None else "",
            response.status_code,
            _since(started),
        )
        return classify(response, site)

    def _pause(self, delay: float, cancel: threading.Event | None) -> None:
        """Wait out a backoff; a look-ahead read wakes early (and drops out) when its read has ended."""
        if self._sleep is not None:
            self._sleep(delay)
        elif cancel is None:
            time.sleep(delay)
        elif cancel.wait(delay):
            raise _Cancelled

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when eMAG sends one, else exponential backoff with jitter (half fixed, half random)."""
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_SECONDS)
        ceiling = min(self.config.max_backoff_seconds, self.config.backoff_seconds * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._jitter())


def _since(started: float) -> float:
    return time.monotonic() - started


def _offer_id(entity: Mapping[str, Any], index: int) -> int:
    """The offer's eMAG id, checked before anything is sent."""
    value = entity.get("id") if isinstance(entity, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OFFER_ID:
        raise ValueError(
            f"offer #{index}: 'id' must be an integer between 1 and {MAX_OFFER_ID}, got {value!r}"
        )
    return value
