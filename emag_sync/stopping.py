"""A stop the operator asked for (Ctrl-C, SIGTERM): each sync ends at its next batch boundary, resumable."""

from __future__ import annotations

import contextvars
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from emag_sync.accounts import Account
from emag_sync.errors import SyncInterruptedError

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_POLL_SECONDS = 0.2  # how often the waiting main thread wakes (signal handlers run between its waits)

_stop = threading.Event()
_signal: signal.Signals | None = None


def request_stop(signum: int) -> None:
    """Ask every sync of this process to stop at its next batch boundary (what the signal handler does)."""
    global _signal
    _signal = signal.Signals(signum)
    _stop.set()


def stop_requested() -> signal.Signals | None:
    """The signal that asked this process to stop, or None."""
    return _signal if _stop.is_set() else None


def clear_stop() -> None:
    """Forget an earlier stop request (a new command starts with none)."""
    global _signal
    _stop.clear()
    _signal = None


def stop_at_boundary(account: Account, where: str) -> None:
    """Raise ``SyncInterruptedError`` when a stop was asked for. Call it only where the committed work is
    whole (between batches): the run is then marked interrupted and ``--resume`` continues it."""
    stopped = stop_requested()
    if stopped is not None:
        raise SyncInterruptedError(
            f"stopped by {stopped.name} {where}; the committed batches stay and `emag-sync sync --resume` "
            "continues the run",
            account=account,
            signal_number=int(stopped),
        )


def run_stoppable(work: Callable[[], T]) -> T:
    """Run ``work`` in a thread while the main thread turns SIGINT and SIGTERM into a stop request.

    In the main thread a signal would land in whatever Prefect's engine is doing (KeyboardInterrupt in its
    wait, its own SIGTERM handler), not in the syncs, which run in task threads and would go on to the end.
    A second signal meets the handler that was there before. Outside the main thread (signals cannot be
    handled there) ``work`` simply runs.
    """
    if threading.current_thread() is not threading.main_thread():
        return work()
    clear_stop()
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()  # Prefect's settings and contexts are context variables

    def target() -> None:
        try:
            outcome["value"] = context.run(work)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def on_signal(signum: int, frame: object) -> None:
        request_stop(signum)
        for number, handler in previous.items():
            signal.signal(number, handler)

    thread = threading.Thread(target=target, name="emag-sync-command", daemon=True)
    for number in STOP_SIGNALS:
        signal.signal(number, on_signal)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(_POLL_SECONDS)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["value"]
    return result
