"""A setting given a value it cannot take: one line naming the variable, the value and what it takes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from emag_sync.errors import ConfigError
from emag_sync.settings import get_settings


@pytest.mark.parametrize(
    ("variable", "value", "takes"),
    [
        ("EMAG_REQUESTS_PER_SECOND", "abc", "a valid number"),
        ("EMAG_REQUESTS_PER_SECOND", "0", "greater than 0"),
        ("EMAG_REQUESTS_PER_SECOND", "inf", "a finite number"),
        ("EMAG_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("EMAG_TIMEOUT_SECONDS", "nan", "a finite number"),
        ("EMAG_MAX_PRICE_CHANGE", "-0.1", "greater than 0"),
        ("EMAG_MAX_PRICE_CHANGE", "Infinity", "a finite number"),
        ("EMAG_MAX_ATTEMPTS", "many", "a valid integer"),
        ("EMAG_SYNC_AUTO_MIGRATE", "maybe", "a valid boolean"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, takes: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as refused:
        get_settings()
    message = str(refused.value)
    assert message.startswith(f"{variable}='{value}' is refused: ") and takes in message
    assert "\n" not in message


def test_a_huge_rate_does_not_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAG_REQUESTS_PER_SECOND", "1e308")
    assert get_settings().emag_requests_per_minute > 0


def test_the_command_line_exits_2_on_a_bad_setting_and_hides_secrets(tmp_path) -> None:
    """Every command reads the settings first: one line on stderr, exit 2, nothing started or written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAG_")}
    env.update(
        EMAG_SYNC_HOME=str(tmp_path / "home"),
        EMAG_REQUESTS_PER_SECOND="inf",
        EMAG_MAIN_PASSWORD="Zq-secret-password",
        EMAG_SYNC_DATABASE_URL="postgresql://u:Zq-db-password@127.0.0.1:1/x",
    )
    for command in (("runs",), ("sync", "--account", "fbe"), ("price-history",), ("db", "url")):
        done = subprocess.run(
            [sys.executable, "-c", "from emag_sync.cli import app; app()", *command],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 2, (command, done.stderr)
        assert done.stdout == "" and done.stderr == (
            "emag-sync: EMAG_REQUESTS_PER_SECOND='inf' is refused: input should be a finite number\n"
        ), command
    assert not (tmp_path / "home").exists()
