"""How a step ends when it fails: a Failed state whose message is one readable line naming the account."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from prefect.exceptions import FailedRun
from prefect.logging.handlers import APILogHandler
from prefect.states import Failed

from emag_sync.accounts import Account
from emag_sync.errors import EmagSyncError

R = TypeVar("R")


def one_line(exc: BaseException) -> str:
    """The error's message on one line (an expected failure's whole story is its message)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def run_step(function: Callable[..., R], *args: Any, account: Account | None = None, **kwargs: Any) -> R:
    """Call a step's plain function and turn a failure into a Failed state with one line.

    An EmagSyncError is expected (a bad setting, eMAG's refusal, a held lock, a critical data-quality
    failure): logged at ERROR as its message, no traceback. Anything else is a bug: its traceback is logged
    and the state's message says so. ``account`` names the account when the error does not.

    A task that returns a state ends in that state, so the Failed state stands in for the result (typed
    as the result: callers look at the task run's state before they ask for its result).
    """
    from prefect.logging import get_run_logger

    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
    try:
        return function(*args, **kwargs)
    except EmagSyncError as exc:
        if exc.account is None:
            exc.account = account
        message = one_line(exc)
        logger.error(message)
    except Exception as exc:
        prefix = f"{account.name}: " if account is not None else ""
        message = (
            f"{prefix}unexpected {type(exc).__name__}: {one_line(exc)} (the traceback is in this run's logs)"
        )
        logger.exception(message)
    return cast(R, Failed(message=message))


class _PlannedFailureFilter(logging.Filter):
    """Drops the traceback Prefect's engine logs when a deployed flow run ends in a Failed state it returned.

    The engine entrypoint of a deployment asks the final state for its result, which raises FailedRun and
    logs "Engine execution exited with unexpected exception" with a traceback of Prefect's internals, right
    after "Finished in state Failed('<the one-line cause>')". For a planned failure that record says nothing
    more; a flow that raised (a bug) carries its own exception, not FailedRun, and keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], FailedRun))


class _NoExceptionStubFilter(logging.Filter):
    """Drops the empty traceback of a record that asks for one outside any exception.

    A task that returns a Failed state has Prefect's task engine log "Task run failed with state: ..."
    with ``exc_info=True`` while no exception is being handled, which appends ``NoneType: None`` to the
    line in the UI. The line itself stays; a record with a real exception keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


def keep_planned_failures_to_one_line() -> None:
    """Install the filters on Prefect's flow-run and task-run loggers (idempotent)."""
    flow_runs = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, _PlannedFailureFilter) for f in flow_runs.filters):
        flow_runs.addFilter(_PlannedFailureFilter())
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoExceptionStubFilter) for f in logger.filters):
            logger.addFilter(_NoExceptionStubFilter())


# The project's own loggers (module loggers: __name__ under these packages).
PROJECT_LOGGERS = ("emag_sync", "tasks", "flows", "expectations")


class _RunLogHandler(APILogHandler):
    """Prefect's API log handler for the project's loggers: a record made inside a flow or task run goes
    to that run's logs in the UI; one made outside any run (the CLI before its flow, tests) is the
    terminal's alone, without Prefect's "no flow run" warning."""

    def emit(self, record: logging.LogRecord) -> None:
        from prefect.context import FlowRunContext, TaskRunContext

        if getattr(record, "flow_run_id", None) or FlowRunContext.get() or TaskRunContext.get():
            super().emit(record)


def send_project_logs_to_prefect() -> None:
    """Every log line of the project reaches the flow run's logs in the UI at its level, whichever way the
    run started (worker, serve, CLI): Prefect sends only its own loggers there by itself. Idempotent; a
    logger already configured through PREFECT_LOGGING_EXTRA_LOGGERS keeps Prefect's handler alone."""
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)  # else the root's WARNING would drop the INFO lines
        if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
            logger.addHandler(_RunLogHandler())


# At import: a deployment's engine loads the flow's file by path (flows/__init__.py does not run), and every
# flow imports the steps, which import this module.
keep_planned_failures_to_one_line()
send_project_logs_to_prefect()
