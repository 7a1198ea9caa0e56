"""Every eMAG answer sorted once: an accepted envelope, or an error that is retriable or fatal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from emag_sync.accounts import Account
from emag_sync.api.paging import CatalogueCount
from emag_sync.api.salvage import parse_answer
from emag_sync.errors import (
    EmagApiError,
    EmagAuthError,
    EmagBusinessError,
    EmagRequestError,
    EmagResponseFormatError,
    EmagUnavailableError,
)

BODY_PREVIEW_BYTES = 200  # how much of an unreadable body an error shows
REDACTED = "[redacted]"
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


@dataclass(frozen=True)
class CallSite:
    """Where a call went, for error messages: account label, ``resource/action``, page, payload subject."""

    account: Account
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
    """An accepted eMAG answer: ``isError`` was false. ``sent_at``: when its request left (UTC)."""

    results: Any
    messages: list[Any]
    sent_at: datetime | None = None


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
        body = parse_answer(response.content)
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
        body = parse_answer(response.content)
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
