"""Whether the Prefect API still answers this process: once it did not, the run stops asking and says so once."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

_lost: str | None = None
_failed_in_a_row = 0  # records (artifacts) the API did not take, since the last one it took
_lock = threading.Lock()


def mark_lost(reason: str) -> None:
    """The Prefect API did not answer (``reason``): log it once; from now on callers go on without it."""
    global _lost
    with _lock:
        if _lost is not None:
            return
        _lost = reason
    # Prefect's log worker writes an error to stderr for every batch it then cannot send (stdlib handler
    # convention): the loss is said once, here.
    logging.raiseExceptions = False
    log.warning(
        "the Prefect API does not answer (%s): the run goes on at eMAG's pace (its budget is the database's); "
        "what it cannot record in Prefect (progress, artifacts) is logged here instead",
        reason,
    )


# Answers that say the server is there but cannot serve now (the ones Prefect's own client retries): an
# embedded SQLite server answers 503 while its database is locked by another writer.
BUSY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_unreachable(exc: BaseException) -> bool:
    """Nothing answers at the API's address (refused, no route, a connect that timed out)."""
    import httpx

    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def is_busy(exc: BaseException) -> bool:
    """The server is there but did not serve this call (a busy answer, or no answer in time): worth a retry."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in BUSY_STATUSES
    return isinstance(exc, httpx.TimeoutException | httpx.ReadError | httpx.RemoteProtocolError)


def describe(exc: BaseException) -> str:
    """One line for the operator: ``503 Service Unavailable`` rather than Prefect's paragraph with a link."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.response.status_code} {exc.response.reason_phrase}".strip()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def is_lost() -> bool:
    """Whether the Prefect API was found gone in this process."""
    return _lost is not None


def record_failed() -> int:
    """One more record the API did not take; how many in a row now."""
    global _failed_in_a_row
    with _lock:
        _failed_in_a_row += 1
        return _failed_in_a_row


def record_made() -> None:
    """The API took a record: the count of failures in a row starts again."""
    global _failed_in_a_row
    with _lock:
        _failed_in_a_row = 0


def reset() -> None:
    """Forget a loss and the failures counted (a new run, or tests)."""
    global _lost, _failed_in_a_row
    with _lock:
        _lost, _failed_in_a_row = None, 0
