"""Run one account's data-quality checkpoint with Great Expectations and say what it found."""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import URL

from emag_sync.accounts import AccountType
from emag_sync.db import make_engine, normalise_url
from emag_sync.runs import DqStatus, RunStatus, record_dq
from emag_sync.schema import products, sync_runs
from expectations.suites import (
    ACTIVE_PRODUCT_COUNT,
    DEFAULT_REJECT_THRESHOLD,
    MAX_LISTED_SKUS,
    RUN,
    Check,
    Severity,
    asset_query,
    checks_for,
)

GX_DIR = "gx"
DATASOURCE = "emag"
DATA_DOCS_SITE = "local_site"
# Validation results kept per account; older ones are pruned so the Data Docs index stays quick to build.
KEEP_VALIDATION_RUNS = 30
# GX contexts are not thread-safe, and the sync flow checks both accounts at the same time.
_GX_LOCK = threading.Lock()


@dataclass(frozen=True)
class DQRow:
    """The outcome of one expectation. ``passed`` is None when it did not apply (no sync run yet)."""

    name: str
    severity: Severity
    passed: bool | None
    observed: str
    details: str = ""

    @property
    def outcome(self) -> str:
        return "n/a" if self.passed is None else "pass" if self.passed else "FAIL"


@dataclass(frozen=True)
class DQResult:
    """One account's checkpoint: every expectation's outcome, the overall status and the Data Docs page."""

    account: AccountType
    status: DqStatus
    rows: list[DQRow]
    data_docs_index: Path
    run_id: int | None = None

    @property
    def critical_failures(self) -> list[DQRow]:
        return [r for r in self.rows if r.passed is False and r.severity == "critical"]

    @property
    def warnings(self) -> list[DQRow]:
        return [r for r in self.rows if r.passed is False and r.severity == "warning"]

    @property
    def message(self) -> str:
        """Critical failures (else warnings), each naming the expectation's observed values."""
        failing = self.critical_failures or self.warnings
        if not failing:
            skipped = sum(row.passed is None for row in self.rows)
            note = f" ({skipped} not applicable)" if skipped else ""
            return f"{self.account.value}: all {len(self.rows) - skipped} expectations passed{note}"
        return "; ".join(dict.fromkeys(f"{self.account.value}: {row.details}" for row in failing))

    def as_json(self) -> dict[str, Any]:
        """Plain JSON: what the run-history row stores in ``dq_results``."""
        return {
            "account": self.account.value,
            "status": self.status,
            "message": self.message,
            "run_id": self.run_id,
            "data_docs_index": str(self.data_docs_index),
            "rows": [asdict(row) for row in self.rows],
        }


@dataclass(frozen=True)
class _Facts:
    """What the checkpoint needs besides GX: the active product count and the run row, read once."""

    active_products: int
    run_id: int | None
    run: Mapping[str, Any] | None
    run_missing: bool = False


def run_checkpoint(
    database_url: str | URL,
    account: AccountType,
    *,
    run_id: int | None,
    home: Path,
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD,
    record_outcome: bool = True,
) -> DQResult:
    """Validate one account's loaded tables; GX output (results, Data Docs) goes under ``home/gx``.

    ``run_id`` is the sync run to check completeness for; None uses the account's latest succeeded run
    (or reports that check as not applicable). With a ``run_id`` the outcome is stored on its row
    (``emag_sync.runs.record_dq``); a standalone check leaves the run history alone.
    """
    url = normalise_url(database_url) if isinstance(database_url, str) else database_url
    account = AccountType(account)
    checks = checks_for(reject_threshold=reject_threshold)
    engine = make_engine(url)
    try:
        facts = _read_facts(engine, account, run_id)
        with _GX_LOCK:
            outcomes, docs_index = _validate(url, account, facts, checks, home / GX_DIR)
        rows = [_row(check, outcomes.get(check.name), facts) for check in checks]
        result = DQResult(
            account=account,
            status=_status(rows),
            rows=rows,
            data_docs_index=docs_index,
            run_id=facts.run_id,
        )
        if record_outcome and run_id is not None and not facts.run_missing:
            record_dq(engine, run_id, result.status, result.as_json())
        return result
    finally:
        engine.dispose()


def _read_facts(engine: Engine, account: AccountType, run_id: int | None) -> _Facts:
    with engine.connect() as conn:
        active_products = conn.scalar(
            select(func.count()).where(products.c.account_type == account.value, products.c.is_active)
        )
        wanted = select(sync_runs).where(sync_runs.c.account_type == account.value)
        if run_id is None:
            wanted = (
                wanted.where(sync_runs.c.status == RunStatus.SUCCEEDED)
                .order_by(sync_runs.c.id.desc())
                .limit(1)
            )
        else:
            wanted = wanted.where(sync_runs.c.id == run_id)
        run = conn.execute(wanted).mappings().first()
    return _Facts(
        active_products=int(active_products or 0),
        run_id=run["id"] if run else run_id,
        run=dict(run) if run else None,
        run_missing=run is None and run_id is not None,
    )


def _import_gx() -> Any:
    """Great Expectations, imported on first use only (it costs seconds), with analytics off."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def _context(gx: Any, root: Path) -> Any:
    """An in-memory context (the datasource is never persisted, so no connection string lands on disk)
    that keeps validation results and Data Docs as files under ``root``."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        FilesystemStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = FilesystemStoreBackendDefaults(root_directory=str(root))
    # Suites, validation definitions and the checkpoint are rebuilt from code on every run: keep them in
    # memory, so a changed suite never meets a stale copy on disk. Validation results stay as history.
    for store in ("expectations_store", "validation_definition_store", "checkpoint_store"):
        defaults.stores[store]["store_backend"] = {"class_name": "InMemoryStoreBackend"}
    defaults.data_docs_sites[DATA_DOCS_SITE]["show_how_to_buttons"] = False
    config = DataContextConfig(
        store_backend_defaults=defaults,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _validate(
    url: URL, account: AccountType, facts: _Facts, checks: Sequence[Check], root: Path
) -> tuple[dict[str, Any], Path]:
    """Build the account's suites and checkpoint from ``checks``, run it, and return results by check."""
    gx = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    root.mkdir(parents=True, exist_ok=True)
    _prune_history(root, account)
    context = _context(gx, root)
    datasource = _add_datasource(context, url)
    try:
        wanted = [c for c in checks if c.asset != RUN or facts.run is not None]
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"emag_{account.value}",
                validation_definitions=[
                    _add_validation(gx, context, datasource, account, asset, wanted, facts.run_id)
                    for asset in dict.fromkeys(c.asset for c in wanted)
                ],
                # COMPLETE returns the offending rows (GX caps them at 200); "sku" names each failing row.
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": ["sku"],
                    "partial_unexpected_count": MAX_LISTED_SKUS,
                    "return_unexpected_index_query": False,
                },
            )
        )
        run_name = f"{account.value}-run-{facts.run_id}" if facts.run else f"{account.value}-check"
        result = checkpoint.run(
            expectation_parameters={ACTIVE_PRODUCT_COUNT: facts.active_products},
            run_id=RunIdentifier(run_name=run_name),
        )
    finally:
        datasource.get_engine().dispose()
    # Data Docs once for the whole checkpoint: GX's UpdateDataDocsAction rebuilds the site (index included)
    # once per validation definition, which made it most of the checkpoint's run time.
    context.build_data_docs(
        site_names=[DATA_DOCS_SITE],
        resource_identifiers=[
            *result.run_results,
            *(ExpectationSuiteIdentifier(name=v.suite_name) for v in result.run_results.values()),
        ],
    )
    outcomes: dict[str, Any] = {}
    for validation in result.run_results.values():
        for outcome in validation.results:
            config = outcome.expectation_config
            if config is not None and config.meta:
                outcomes[config.meta["check"]] = outcome
    return outcomes, _docs_index(root)


def _docs_index(gx_root: Path) -> Path:
    return gx_root / "uncommitted" / "data_docs" / DATA_DOCS_SITE / "index.html"


def data_docs_index(home: Path) -> Path:
    """Where the Data Docs site's index page is written for EMAG_SYNC_HOME ``home``."""
    return _docs_index(home / GX_DIR)


def _add_datasource(context: Any, url: URL) -> Any:
    """GX's SQL source for the database; the password goes as a connect argument, never in the URL."""
    password = url.password
    kwargs = {"connect_args": {"password": str(password)}} if password else {}
    with warnings.catch_warnings():
        # The generic SQL source on purpose: GX's Postgres one rejects socket-only URLs (embedded server).
        warnings.simplefilter("ignore")
        return context.data_sources.add_sql(
            DATASOURCE,
            connection_string=url.set(password=None).render_as_string(hide_password=False),
            kwargs=kwargs,
        )


def _add_validation(
    gx: Any,
    context: Any,
    datasource: Any,
    account: AccountType,
    asset: str,
    checks: Sequence[Check],
    run_id: int | None,
) -> Any:
    """One query asset of the account, its suite, and the validation definition joining them."""
    name = f"emag_{account.value}_{asset}"
    data = datasource.add_query_asset(name, query=asset_query(asset, account, run_id))
    suite = gx.ExpectationSuite(
        name=name, expectations=[_expectation(gx, c) for c in checks if c.asset == asset]
    )
    return context.validation_definitions.add_or_update(
        gx.ValidationDefinition(
            name=name,
            data=data.add_batch_definition_whole_table("all rows"),
            suite=context.suites.add_or_update(suite),
        )
    )


def _expectation(gx: Any, check: Check) -> Any:
    cls = getattr(gx.expectations, check.expectation)
    extra = {"description": check.description} if check.description else {}
    return cls(**check.kwargs, severity=check.severity, meta={"check": check.name}, **extra)


def _prune_history(root: Path, account: AccountType) -> None:
    """Drop all but the newest validation results (and their Data Docs pages) of the account's suites."""
    stores = [
        root / "uncommitted" / "validations",
        root / "uncommitted" / "data_docs" / DATA_DOCS_SITE / "validations",
    ]
    for store in stores:
        for suite_dir in store.glob(f"emag_{account.value}_*"):
            # Layout: <suite>/<run name>/<run time>/...; run times sort chronologically as text.
            runs = sorted(suite_dir.glob("*/*"), key=lambda p: p.name)
            for old in runs[: max(0, len(runs) - (KEEP_VALIDATION_RUNS - 1))]:
                shutil.rmtree(old, ignore_errors=True)
                if not any(old.parent.iterdir()):
                    old.parent.rmdir()


def _row(check: Check, outcome: Any, facts: _Facts) -> DQRow:
    """One report row from a GX result; run checks without a run are not applicable."""
    if outcome is None and facts.run_missing:
        # A run id that is not in the history cannot be complete; the reject share then does not apply.
        passed = False if check.severity == "critical" else None
        return DQRow(
            check.name, check.severity, passed, "no such run", f"run {facts.run_id} is not in the run history"
        )
    if outcome is None:
        return DQRow(check.name, check.severity, None, "not applicable", "no succeeded sync run yet")
    if outcome.exception_info and outcome.exception_info.get("raised_exception"):
        message = str(outcome.exception_info.get("exception_message") or "GX raised an error").splitlines()[0]
        return DQRow(check.name, check.severity, False, "error", f"{check.name} could not run: {message}")
    values = _values(outcome.result or {}, facts)
    observed = _observed(check, values)
    details = "" if outcome.success else check.failure.format_map(values)
    return DQRow(check.name, check.severity, bool(outcome.success), observed, details)


def _values(result: Mapping[str, Any], facts: _Facts) -> dict[str, Any]:
    """Everything a failure template may name, from a GX result and the run row."""
    run = facts.run or {}
    seen = (run.get("records_loaded") or 0) + (run.get("rows_rejected") or 0)
    expected_items = run.get("expected_items")
    share_base = max(expected_items or 0, seen)
    rows = (result.get("details") or {}).get("unexpected_rows") or []
    skus = _skus(result, rows)
    if result.get("unexpected_count") is not None:
        count = int(result["unexpected_count"])
    elif "details" in result:  # UnexpectedRowsExpectation: the observed value is the offending row count
        count = int(result.get("observed_value") or 0)
    else:
        count = len(skus)
    return {
        "observed": result.get("observed_value"),
        "expected": facts.active_products,
        "unexpected": count,
        "total": result.get("element_count"),
        "skus": _sku_list(skus, count),
        "run_id": facts.run_id,
        "expected_items": expected_items,
        "records_loaded": run.get("records_loaded"),
        "rows_rejected": run.get("rows_rejected"),
        "rows_deactivated": run.get("rows_deactivated"),
        "reject_share": f"{(run.get('rows_rejected') or 0) / share_base:.2%}" if share_base else "n/a",
    }


def _skus(result: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    found = [row.get("sku") for row in rows]
    for key in ("partial_unexpected_index_list", "partial_unexpected_list"):
        found += [item.get("sku") for item in result.get(key) or [] if isinstance(item, Mapping)]
    return list(dict.fromkeys(str(sku) for sku in found if sku is not None))


def _sku_list(skus: list[str], count: int) -> str:
    listed = skus[:MAX_LISTED_SKUS]
    more = count - len(listed)
    text = ", ".join(listed) if listed else "(no SKU)"
    return f"{text} (+{more} more)" if more > 0 else text


def _observed(check: Check, values: Mapping[str, Any]) -> str:
    """A short observed value for tables: the count the expectation measured."""
    if check.expectation == "ExpectTableRowCountToEqual":
        return f"{values['observed']} active offers, {values['expected']} active products"
    if check.asset == RUN:
        return (
            f"loaded {values['records_loaded']} + rejected {values['rows_rejected']}"
            f" of eMAG count {values['expected_items']} (rejected {values['reject_share']})"
        )
    if values["total"] is not None:
        return f"{values['unexpected']} of {values['total']} rows unexpected"
    return f"{values['unexpected']} offending rows"


def _status(rows: Iterable[DQRow]) -> DqStatus:
    rows = list(rows)
    if any(r.passed is False and r.severity == "critical" for r in rows):
        return DqStatus.FAILED
    if any(r.passed is False for r in rows):
        return DqStatus.WARNING
    return DqStatus.PASSED
