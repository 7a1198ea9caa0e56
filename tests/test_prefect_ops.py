"""Secrets from Prefect blocks, the Prefect-wide rate budget, and `emag-sync setup-prefect`."""

from __future__ import annotations

import contextlib
import itertools
import logging
import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr
from typer.testing import CliRunner

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.api import global_limit as shared_limit
from emag_sync.api.credentials import resolve_account_config, secret_block_names
from emag_sync.api.global_limit import PrefectRateLimiter, gcl_name, shared_limiter_for
from emag_sync.api.ratelimit import SlidingWindowLimiter, limiter_for
from emag_sync.errors import MissingCredentialsError
from emag_sync.settings import Settings

ENV_CREDENTIALS = {
    "emag_main_username": "env-main-user",
    "emag_main_password": "env-main-pass-Zq81",
    "emag_fbe_username": "env-fbe-user",
    "emag_fbe_password": "env-fbe-pass-Kx27",
}


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {**ENV_CREDENTIALS, "emag_api_url": "http://127.0.0.1:9/api-3", **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def no_prefect_api() -> Iterator[None]:
    """As on a laptop without a Prefect server: no PREFECT_API_URL, not in a flow run."""
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


@pytest.fixture
def dead_prefect_api() -> Iterator[None]:
    """PREFECT_API_URL set, but nothing listens there (port 9 is discard, closed on loopback)."""
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        yield


@pytest.fixture
def fresh_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test decides afresh whether the global limit is usable (the decision is cached per process)."""
    monkeypatch.setattr(shared_limit, "_decisions", {})


@pytest.fixture
def prefect_client(prefect_harness: None) -> Iterator[object]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


def _delete_blocks(names: tuple[str, ...]) -> None:
    from prefect.blocks.system import Secret
    from prefect.utilities.asyncutils import run_coro_as_sync

    for name in names:
        with contextlib.suppress(ValueError):  # not there: nothing to clean
            run_coro_as_sync(Secret.adelete(name))


def _delete_limits(client: object, names: list[str]) -> None:
    from prefect.exceptions import ObjectNotFound

    for name in names:
        with contextlib.suppress(ObjectNotFound):
            client.delete_global_concurrency_limit_by_name(name)  # type: ignore[attr-defined]


# --- credentials -------------------------------------------------------------------------------------


def test_without_prefect_api_credentials_come_from_the_environment(no_prefect_api: None) -> None:
    config = resolve_account_config(_settings(), legacy_account(AccountType.FBE))
    assert (config.username, config.password.get_secret_value()) == ("env-fbe-user", "env-fbe-pass-Kx27")


def test_missing_everywhere_names_the_environment_variables(dead_prefect_api: None) -> None:
    started = time.monotonic()
    with pytest.raises(MissingCredentialsError, match="EMAG_MAIN_USERNAME and EMAG_MAIN_PASSWORD"):
        resolve_account_config(
            _settings(emag_main_username=None, emag_main_password=None), legacy_account(AccountType.MAIN)
        )
    assert time.monotonic() - started < 10, "an unreachable Prefect API must not stall the run"


def test_secret_blocks_win_over_the_environment_and_never_reach_the_log(
    prefect_harness: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    from emag_sync.api import credentials

    monkeypatch.setattr(credentials, "_logged", set())  # sources are logged once per process and run

    # "0123" would become the number 123 through Secret.get(), which JSON-decodes.
    Secret(value=SecretStr("block-fbe-user")).save("emag-fbe-username", overwrite=True)
    Secret(value=SecretStr("0123")).save("emag-fbe-password", overwrite=True)
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="emag_sync"):
            fbe = resolve_account_config(_settings(), legacy_account(AccountType.FBE))
            main = resolve_account_config(_settings(), legacy_account(AccountType.MAIN))
    finally:
        _delete_blocks(("emag-fbe-username", "emag-fbe-password"))
    assert (fbe.username, fbe.password.get_secret_value()) == ("block-fbe-user", "0123")
    assert (main.username, main.password.get_secret_value()) == ("env-main-user", "env-main-pass-Zq81")
    assert "0123" not in repr(fbe) and "0123" not in str(fbe)
    logged = caplog.text
    assert (
        "fbe: username from Prefect Secret block emag-fbe-username; password from Prefect Secret block "
        "emag-fbe-password" in logged
    )
    assert "main: username from the environment (EMAG_MAIN_USERNAME); password from the environment" in logged
    assert "fbe: EMAG_FBE_PASSWORD in the environment differs from Secret block emag-fbe-password" in logged
    assert "emag-main-password" in logged  # the fallback was logged, by block name
    for secret in ("0123", "env-main-pass-Zq81", "env-fbe-pass-Kx27"):
        assert secret not in logged


# --- shared rate budget ------------------------------------------------------------------------------


def test_without_prefect_api_the_in_process_limiter_is_used(
    no_prefect_api: None, fresh_decisions: None
) -> None:
    config = _settings().account_config(legacy_account(AccountType.FBE))
    assert shared_limiter_for(config) is limiter_for(config)


def test_unreachable_prefect_api_falls_back_to_the_in_process_limiter(
    dead_prefect_api: None, fresh_decisions: None
) -> None:
    config = _settings().account_config(legacy_account(AccountType.MAIN))
    assert shared_limiter_for(config) is limiter_for(config)


def test_missing_global_limit_falls_back_and_an_existing_one_is_used(
    prefect_client: object, fresh_decisions: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    config = _settings().account_config(legacy_account(AccountType.FBE))
    _delete_limits(prefect_client, [gcl_name(legacy_account(AccountType.FBE))])
    assert shared_limiter_for(config) is limiter_for(config)

    monkeypatch.setattr(shared_limit, "_decisions", {})
    prefect_client.create_global_concurrency_limit(  # type: ignore[attr-defined]
        GlobalConcurrencyLimitCreate(
            name=gcl_name(legacy_account(AccountType.FBE)), limit=1, slot_decay_per_second=3.0
        )
    )
    try:
        limiter = shared_limiter_for(config)
        assert isinstance(limiter, PrefectRateLimiter)
        assert (limiter.limit_name, limiter.local) == ("emag-api-fbe", limiter_for(config))
        limiter.acquire()
        # The limit disappears mid-run: the sync keeps going, paced in-process, instead of failing.
        _delete_limits(prefect_client, [gcl_name(legacy_account(AccountType.FBE))])
        limiter.acquire()
        limiter.acquire()
    finally:
        _delete_limits(prefect_client, [gcl_name(legacy_account(AccountType.FBE))])


def _new_test_limit(prefect_client: object) -> str:
    """A fresh global limit shaped like emag-api-<account> (limit 1, decay 3/s); the caller deletes it."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"emag-api-test-{uuid.uuid4().hex[:8]}"
    prefect_client.create_global_concurrency_limit(  # type: ignore[attr-defined]
        GlobalConcurrencyLimitCreate(name=name, limit=shared_limit.GCL_LIMIT, slot_decay_per_second=3.0)
    )
    return name


def _grants(limiters: list[PrefectRateLimiter], seconds: float) -> list[float]:
    """One thread per limiter acquiring for ``seconds``: the sorted times at which requests were granted."""
    granted: list[float] = []
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def call(limiter: PrefectRateLimiter) -> None:
        while time.monotonic() < until:
            limiter.acquire()
            with lock:
                granted.append(time.monotonic())

    threads = [threading.Thread(target=call, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(granted)


def test_two_callers_of_one_account_share_three_requests_per_second(prefect_client: object) -> None:
    name = _new_test_limit(prefect_client)
    # Two limiters with their own in-process windows stand for two processes: each window alone would
    # allow 3/s, so together they would reach 6/s if the global limit did nothing.
    callers = [
        PrefectRateLimiter(name, local=SlidingWindowLimiter(3.0, 180), slot_decay_per_second=3.0)
        for _ in range(2)
    ]
    try:
        granted = _grants(callers, 3.0)
    finally:
        _delete_limits(prefect_client, [name])
    # The server spaces grants >= 1/3 s apart, so 4 grants span >= 1 s on its clock. We observe them after
    # an HTTP round trip whose duration varies by tens of ms, so the window we count in is 0.9 s: 100 ms of
    # tolerance for that jitter, far less than the 1/3 s a fourth request per second would need.
    busiest = max(sum(1 for t in granted if start <= t < start + 0.9) for start in granted)
    assert busiest <= 3, [round(t - granted[0], 2) for t in granted]
    assert len(granted) >= 5, "both callers must have made progress"
    assert not any(limiter._degraded for limiter in callers)


def test_one_caller_alone_keeps_90_percent_of_the_rate_through_the_global_limit(
    prefect_client: object,
) -> None:
    """Issue 2's >= 90% of 3/s must hold with the GCL too: overlapping requests, as the client's look-ahead."""
    name = _new_test_limit(prefect_client)
    limiter = PrefectRateLimiter(name, local=SlidingWindowLimiter(3.0, 180), slot_decay_per_second=3.0)
    try:
        granted = _grants([limiter] * 4, 4.0)
    finally:
        _delete_limits(prefect_client, [name])
    offsets = [round(t - granted[0], 2) for t in granted]
    # The sustained rate, from the median gap between grants, so one scheduling hiccup of a loaded CI
    # machine does not decide the test. Burst-then-refused pacing reached ~2.2/s here (random Retry-After
    # sleeps); even spacing reaches the local window's 3 per 1.08 s.
    rate = 1 / statistics.median(b - a for a, b in itertools.pairwise(granted))
    assert rate >= 0.9 * 3, (rate, offsets)
    # Grants 1.08/3 s apart leave 0.08 s of each second for the API round trip's jitter: no tolerance needed.
    busiest = max(sum(1 for t in granted if start <= t < start + 1.0) for start in granted)
    assert busiest <= 3, offsets
    assert not limiter._degraded


# --- setup command -----------------------------------------------------------------------------------


def test_setup_prefect_creates_blocks_limits_and_pool_idempotently(
    prefect_client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emag_sync.cli import app

    for field, value in ENV_CREDENTIALS.items():
        monkeypatch.setenv(field.upper(), value)
    monkeypatch.delenv("EMAG_MAIN_PASSWORD")
    runner = CliRunner()
    try:
        first = runner.invoke(app, ["setup-prefect"])
        second = runner.invoke(app, ["setup-prefect"])
        limits = [
            prefect_client.read_global_concurrency_limit_by_name(gcl_name(legacy_account(a)))
            for a in AccountType
        ]  # type: ignore[attr-defined]
        pool = prefect_client.read_work_pool("emag-sync-pool")  # type: ignore[attr-defined]
        fbe = resolve_account_config(
            _settings(emag_fbe_username=None, emag_fbe_password=None), legacy_account(AccountType.FBE)
        )
    finally:
        _delete_blocks(secret_block_names(legacy_account(kind) for kind in AccountType))
        _delete_limits(prefect_client, [gcl_name(legacy_account(a)) for a in AccountType])
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "Secret block emag-fbe-password: created from EMAG_FBE_PASSWORD" in first.output
    assert "Secret block emag-main-password: skipped, EMAG_MAIN_PASSWORD not set" in first.output
    assert "global concurrency limit emag-api-fbe: created (limit 1, slot decay 3.0/s)" in first.output
    assert "Secret block emag-fbe-password: unchanged" in second.output
    assert "global concurrency limit emag-api-main: unchanged" in second.output
    assert "work pool emag-sync-pool: exists (type process)" in second.output
    for secret in ENV_CREDENTIALS.values():
        assert secret not in first.output + second.output
    assert [(lim.limit, lim.slot_decay_per_second) for lim in limits] == [(1, 3.0), (1, 3.0)]
    assert pool.type == "process"
    assert (fbe.username, fbe.password.get_secret_value()) == ("env-fbe-user", "env-fbe-pass-Kx27")


def test_setup_prefect_without_api_url_says_what_to_do(no_prefect_api: None) -> None:
    from emag_sync.cli import app

    result = CliRunner().invoke(app, ["setup-prefect"])
    assert result.exit_code == 1
    assert "PREFECT_API_URL is not set" in result.output
