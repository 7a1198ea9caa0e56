"""Whether the Prefect API still answers this process: once it did not, the run stops asking and says so once."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

_lost: str | None = None
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


def is_lost() -> bool:
    """Whether the Prefect API was found gone in this process."""
    return _lost is not None


def reset() -> None:
    """Forget a loss (a new run, or tests)."""
    global _lost
    with _lock:
        _lost = None
