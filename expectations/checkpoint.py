"""Run the data-quality checkpoint of one or many accounts with Great Expectations and say what it found."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import URL

from emag_sync.accounts import Account
from emag_sync.db import make_engine, normalise_url
from emag_sync.run_row import DqStatus, RunStatus
from emag_sync.runs import record_dq
from emag_sync.schema import products, sync_runs
from emag_sync.settings import DEFAULT_DATA_DOCS_URL
from expectations.results import DQResult, DQRow, Facts, row_of, status_of
from expectations.run_page import RUNS_SECTION, ValidationPage, run_page_path, write_run_page
from expectations.suites import (
    ACTIVE_PRODUCT_COUNT,
    DEFAULT_REJECT_THRESHOLD,
    MAX_LISTED_SKUS,
    RUN,
    Check,
    asset_query,
    checks_for,
)

log = logging.getLogger(__name__)

GX_DIR = "gx"
DATASOURCE = "emag"
DATA_DOCS_SITE = "local_site"
# Validation results (and run pages) kept per account; older ones are pruned so the Data Docs index stays
# quick to build.
KEEP_VALIDATION_RUNS = 30
# GX contexts are not thread-safe, and two flows in one process (serve) may check at the same time.
_GX_LOCK = threading.Lock()
# The validation page renderer that escapes data (GX imports it by name).
_PAGE_RENDERER = {
    "module_name": "expectations.docs_render",
    "class_name": "EscapingValidationResultsPageRenderer",
}
# Views that compile each page template once per process, not once per view and build.
_PAGE_VIEW = {"module_name": "expectations.docs_views", "class_name": "CachedJinjaPageView"}
_INDEX_VIEW = {"module_name": "expectations.docs_views", "class_name": "CachedJinjaIndexPageView"}
_preload_lock = threading.Lock()
_preloading: threading.Thread | None = None


@dataclass(frozen=True)
class _DocsRun:
    """What a checkpoint run left in Data Docs: GX's run name and time, and its validation pages."""

    run_name: str
    run_time: str
    checked_at: datetime
    validations: list[ValidationPage]


@dataclass(frozen=True)
class _Plan:
    """One account of a checkpoint: its expectations and the facts they need, read before GX runs."""

    account: Account
    facts: Facts
    checks: list[Check]


@dataclass(frozen=True)
class _Validated:
    """One account's GX outcomes by check, and what its run left in Data Docs."""

    outcomes: dict[str, Any]
    docs_run: _DocsRun


def run_checkpoint(
    database_url: str | URL,
    account: Account,
    *,
    run_id: int | None,
    home: Path,
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD,
    record_outcome: bool = True,
    docs_dir: Path | None = None,
    docs_url: str = DEFAULT_DATA_DOCS_URL,
) -> DQResult:
    """One account's checkpoint: ``run_checkpoints`` of that account alone."""
    results = run_checkpoints(
        database_url,
        [(account, run_id)],
        home=home,
        reject_threshold=reject_threshold,
        record_outcome=record_outcome,
        docs_dir=docs_dir,
        docs_url=docs_url,
    )
    return results[account.name]


def run_checkpoints(
    database_url: str | URL,
    targets: Sequence[tuple[Account, int | None]],
    *,
    home: Path,
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD,
    record_outcome: bool = True,
    docs_dir: Path | None = None,
    docs_url: str = DEFAULT_DATA_DOCS_URL,
) -> dict[str, DQResult]:
    """Validate the loaded tables of every (account, sync run id) in one Great Expectations run, and
    return each account's verdict by account name.

    One pass of queries reads every account's facts, one GX context and datasource validate each account's
    suites (one validation per account and asset), and the Data Docs site is built once; each account
    still gets its own result, report page and run history entry. When GX cannot validate one account,
    that account alone fails (a critical row saying why); the others keep their verdicts.

    Validation results go under ``home/gx``, the Data Docs site into ``docs_dir`` (default:
    ``data_docs_site(home)``), each account's run page linked at ``docs_url``. A run id of None uses the
    account's latest succeeded run (or reports the run checks as not applicable). With a run id the outcome
    is stored on its row (``emag_sync.runs.record_dq``); a standalone check leaves the run history alone.
    """
    url = normalise_url(database_url) if isinstance(database_url, str) else database_url
    run_ids = {account.name: run_id for account, run_id in targets}
    accounts = {account.name: account for account, _ in targets}
    site = data_docs_site(home, docs_dir)
    gx = _import_gx()  # outside the lock: another checkpoint need not wait for the import
    engine = make_engine(url)
    try:
        facts = _read_facts(engine, accounts, run_ids)
        plans = [
            _Plan(
                account,
                facts[name],
                checks_for(
                    reject_threshold=reject_threshold, currencies=account.platform.accepted_currencies()
                ),
            )
            for name, account in accounts.items()
        ]
        with _GX_LOCK:
            validated = _validate(gx, url, plans, home / GX_DIR, site)
        results: dict[str, DQResult] = {}
        for plan in plans:
            result = _result(plan, validated[plan.account.name], site, docs_url)
            run_id = run_ids[plan.account.name]
            if record_outcome and run_id is not None and not plan.facts.run_missing:
                record_dq(engine, run_id, result.status, result.as_json())
            results[plan.account.name] = result
        return results
    finally:
        engine.dispose()


def _result(plan: _Plan, validated: _Validated | str, site: Path, docs_url: str) -> DQResult:
    """The account's verdict and its report page; ``validated`` is why GX could not validate it, if so."""
    facts = plan.facts
    if isinstance(validated, str):
        row = DQRow("checkpoint", "critical", False, "error", f"the checkpoint could not run: {validated}")
        return DQResult(plan.account, DqStatus.FAILED, [row], site / "index.html", run_id=facts.run_id)
    rows = [row_of(check, validated.outcomes.get(check.name), facts) for check in plan.checks]
    result = DQResult(
        account=plan.account,
        status=status_of(rows),
        rows=rows,
        data_docs_index=site / "index.html",
        run_id=facts.run_id,
    )
    page = _write_report_page(site, result, validated.docs_run, standalone=facts.run is None)
    url_of_page = docs_url.rstrip("/") + "/" + quote(page)
    return replace(result, report_page=site / page, report_url=url_of_page)


def _read_facts(
    engine: Engine, accounts: Mapping[str, Account], run_ids: Mapping[str, int | None]
) -> dict[str, Facts]:
    """Every account's active product count and run row, in one pass of three queries."""
    names = list(accounts)
    wanted_ids = [run_id for run_id in run_ids.values() if run_id is not None]
    latest_of = [name for name, run_id in run_ids.items() if run_id is None]
    with engine.connect() as conn:
        active_counts = (
            select(products.c.account, func.count().label("active"))
            .where(products.c.account.in_(names), products.c.is_active)
            .group_by(products.c.account)
        )
        counts: dict[str, int] = {row.account: row.active for row in conn.execute(active_counts)}
        runs: dict[str, dict[str, Any]] = {}
        if wanted_ids:
            for row in conn.execute(select(sync_runs).where(sync_runs.c.id.in_(wanted_ids))).mappings():
                if run_ids.get(row["account"]) == row["id"]:
                    runs[row["account"]] = dict(row)
        if latest_of:
            latest = (
                select(sync_runs)
                .where(sync_runs.c.account.in_(latest_of), sync_runs.c.status == RunStatus.SUCCEEDED)
                .order_by(sync_runs.c.account, sync_runs.c.id.desc())
                .distinct(sync_runs.c.account)
            )
            runs |= {row["account"]: dict(row) for row in conn.execute(latest).mappings()}
    facts: dict[str, Facts] = {}
    for name in names:
        run, run_id = runs.get(name), run_ids[name]
        facts[name] = Facts(
            active_products=counts.get(name, 0),
            run_id=run["id"] if run else run_id,
            run=run,
            run_missing=run is None and run_id is not None,
        )
    return facts


def _gx_analytics_off() -> None:
    if os.environ.get("GX_ANALYTICS_ENABLED") != "false":
        os.environ["GX_ANALYTICS_ENABLED"] = "false"


def _import_gx() -> Any:
    """Great Expectations, imported on first use only (it costs seconds), with analytics off. While
    ``preload`` imports it in the background, this waits for that import (Python's import lock)."""
    _gx_analytics_off()
    import great_expectations as gx

    return gx


def preload() -> None:
    """Start importing Great Expectations in a background (daemon) thread, so that the first checkpoint
    does not spend the seconds the import takes. Safe to call any number of times, from any thread."""
    global _preloading
    with _preload_lock:
        if _preloading is not None or "great_expectations" in sys.modules:
            return
        _gx_analytics_off()  # here, not in the thread: the environment is not safe to write concurrently
        # What Great Expectations imports and the sync threads import lazily (SQLAlchemy resolves its ORM
        # modules on first use), completed here first: two threads importing the same package with
        # circular imports can see it half-initialized ("partially initialized module sqlalchemy.orm.exc").
        _complete_shared_imports()
        _preloading = threading.Thread(target=_import_in_background, name="gx-preload", daemon=True)
        _preloading.start()


def _complete_shared_imports() -> None:
    import sqlalchemy.orm  # noqa: F401
    from sqlalchemy.util import preloaded

    preloaded.import_prefix("sqlalchemy")


def _import_in_background() -> None:
    try:
        import great_expectations  # noqa: F401
    except Exception:  # the checkpoint's own import raises it where it can be reported
        log.debug("preloading Great Expectations failed", exc_info=True)


def data_docs_site(home: Path, docs_dir: Path | None = None) -> Path:
    """The Data Docs site folder: ``docs_dir`` (EMAG_SYNC_DATA_DOCS_DIR) or GX's default under
    ``home`` (EMAG_SYNC_HOME), ``gx/uncommitted/data_docs/local_site``."""
    return docs_dir if docs_dir is not None else home / GX_DIR / "uncommitted" / "data_docs" / DATA_DOCS_SITE


def _context(gx: Any, root: Path, site: Path) -> Any:
    """An in-memory context (the datasource is never persisted, so no connection string lands on disk)
    that keeps validation results as files under ``root`` and writes the Data Docs site into ``site``."""
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
    docs = defaults.data_docs_sites[DATA_DOCS_SITE]
    docs["show_how_to_buttons"] = False
    docs["store_backend"] = {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)}
    docs["site_section_builders"] = {
        "validations": {"renderer": _PAGE_RENDERER, "view": _PAGE_VIEW},
        "expectations": {"view": _PAGE_VIEW},
        "profiling": "None",
    }
    docs["site_index_builder"] = {"class_name": "DefaultSiteIndexBuilder", "view": _INDEX_VIEW}
    config = DataContextConfig(
        store_backend_defaults=defaults,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    # Every asset, batch definition and validation definition added saves the project config, which an
    # ephemeral context only serialises to YAML (every asset so far) into a store nothing reads back: with
    # five assets per account that cost grows with the square of the accounts checked in one run.
    context._save_project_config = _not_saved
    return context


def _not_saved() -> None:
    """What an in-memory context does with its project config: nothing (see ``_context``)."""


def _validate(
    gx: Any, url: URL, plans: Sequence[_Plan], root: Path, site: Path
) -> dict[str, _Validated | str]:
    """Validate every account's suites in one context, then build their Data Docs pages once; returns by
    account name what GX found, or the one line saying why it could not validate that account."""
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    root.mkdir(parents=True, exist_ok=True)
    for plan in plans:
        _prune_history(root, site, plan.account)
    context = _context(gx, root, site)
    datasource = _add_datasource(context, url)
    run_time = datetime.now(UTC)  # one run time: the accounts' pages sort together in the index
    validated: dict[str, _Validated | str] = {}
    identifiers: list[Any] = []
    try:
        for plan in plans:
            try:
                result = _run_account(gx, context, datasource, plan, run_time)
            except Exception as exc:  # GX refused this account's data or query: the others still run
                log.error("%s: the checkpoint could not run", plan.account.name, exc_info=True)
                validated[plan.account.name] = " ".join(str(exc).split()) or type(exc).__name__
                continue
            validated[plan.account.name] = _validated(result)
            identifiers += [
                *result.run_results,
                *(ExpectationSuiteIdentifier(name=v.suite_name) for v in result.run_results.values()),
            ]
    finally:
        datasource.get_engine().dispose()
    all_checks = [check for plan in plans for check in plan.checks]
    _register_site_suites(gx, context, all_checks, _site_accounts(url, [p.account for p in plans]))
    # Data Docs once for the whole run: GX's UpdateDataDocsAction rebuilds the site (index included) once
    # per validation definition, and a build per account would rebuild the index once per account.
    if identifiers:
        context.build_data_docs(site_names=[DATA_DOCS_SITE], resource_identifiers=identifiers)
    return validated


def _run_account(gx: Any, context: Any, datasource: Any, plan: _Plan, run_time: datetime) -> Any:
    """Build the account's suites and checkpoint from its checks and run it (GX's CheckpointResult)."""
    from great_expectations.core.run_identifier import RunIdentifier

    account, facts = plan.account, plan.facts
    wanted = [c for c in plan.checks if c.asset != RUN or facts.run is not None]
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"emag_{account.name}",
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
    run_name = f"{account.name}-run-{facts.run_id}" if facts.run else f"{account.name}-check"
    return checkpoint.run(
        expectation_parameters={ACTIVE_PRODUCT_COUNT: facts.active_products},
        run_id=RunIdentifier(run_name=run_name, run_time=run_time),
    )


def _validated(result: Any) -> _Validated:
    """The outcomes by check of one account's CheckpointResult, and its pages in Data Docs."""
    outcomes: dict[str, Any] = {}
    for validation in result.run_results.values():
        for outcome in validation.results:
            config = outcome.expectation_config
            if config is not None and config.meta:
                outcomes[config.meta["check"]] = outcome
    run_name, run_time = result.run_id.to_tuple()
    validations = [
        ValidationPage(_validation_page(key), validation.suite_name, bool(validation.success))
        for key, validation in result.run_results.items()
    ]
    return _Validated(outcomes, _DocsRun(run_name, run_time, result.run_id.run_time, validations))


def _validation_page(identifier: Any) -> str:
    """The site-relative path of a validation result's page (GX's HtmlSiteStore layout, as in
    ``get_docs_sites_urls``): validations/<suite>/<run name>/<run time>/<batch id>.html."""
    return "/".join(("validations", *identifier.to_tuple())) + ".html"


def _site_accounts(url: URL, accounts: Sequence[Account]) -> list[str]:
    """Every account that has pages on the site: the registered ones (removed ones too), and these."""
    from emag_sync.registry import list_accounts

    engine = make_engine(url)
    try:
        registered = {a.name for a in list_accounts(engine, include_removed=True)}
        return sorted(registered | {account.name for account in accounts})
    finally:
        engine.dispose()


def _register_site_suites(gx: Any, context: Any, checks: Sequence[Check], accounts: Sequence[str]) -> None:
    """Every account's suite names in the (in-memory) expectations store, empty unless this run built
    them: building the site index removes the pages of every suite the store does not know, which would
    drop the other accounts' pages. Only this run's suites are rendered."""
    known = {suite.name for suite in context.suites.all()}
    for account in accounts:
        for asset in dict.fromkeys(check.asset for check in checks):
            name = _suite_name(account, asset)
            if name not in known:
                context.suites.add(gx.ExpectationSuite(name=name))


def _suite_name(account: str, asset: str) -> str:
    return f"emag_{account}_{asset}"


def _write_report_page(site: Path, result: DQResult, run: _DocsRun, *, standalone: bool) -> str:
    """This checkpoint's page in the site (see run_page.py); returns its site-relative path."""
    path = run_page_path(result.account, run.run_name, run.run_time)
    what = "standalone check" if standalone else f"sync run {result.run_id}"
    write_run_page(
        site,
        path,
        title=f"Data quality {result.account.label}, {what}",
        status=result.status.value,
        message=result.message,
        checked_at=run.checked_at,
        rows=result.rows,
        validations=run.validations,
    )
    return path


def data_docs_index(home: Path, docs_dir: Path | None = None) -> Path:
    """The Data Docs site's index page (see ``data_docs_site``)."""
    return data_docs_site(home, docs_dir) / "index.html"


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
    account: Account,
    asset: str,
    checks: Sequence[Check],
    run_id: int | None,
) -> Any:
    """One query asset of the account, its suite, and the validation definition joining them."""
    name = _suite_name(account.name, asset)
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


def _prune_history(root: Path, site: Path, account: Account) -> None:
    """Drop all but the newest validation results of the account's suites, their Data Docs pages and the
    account's run pages (room is left for the run about to be written)."""
    folders = [
        *(root / "uncommitted" / "validations").glob(f"emag_{account.name}_*"),
        *(site / "validations").glob(f"emag_{account.name}_*"),
        site / RUNS_SECTION / f"emag_{account.name}",
    ]
    for folder in folders:
        # Layout: <folder>/<run name>/<run time>/...; run times sort chronologically as text.
        runs = sorted(folder.glob("*/*"), key=lambda p: p.name)
        for old in runs[: max(0, len(runs) - (KEEP_VALIDATION_RUNS - 1))]:
            shutil.rmtree(old, ignore_errors=True)
            if not any(old.parent.iterdir()):
                old.parent.rmdir()
