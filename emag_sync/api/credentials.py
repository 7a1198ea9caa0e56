"""Account credentials from Prefect Secret blocks when they exist, else from the environment."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from emag_sync.accounts import AccountType
from emag_sync.settings import AccountConfig, Settings

log = logging.getLogger(__name__)

# Prefix of Prefect's "no such block" error (blocks/core.py raises a plain ValueError with this text).
_BLOCK_NOT_FOUND = "Unable to find block document"


def secret_block_name(account: AccountType, field: str) -> str:
    """``emag-main-username``, ``emag-fbe-password``, ...: the Secret block holding one credential."""
    return f"emag-{account.value}-{field}"


SECRET_BLOCK_NAMES: tuple[str, ...] = tuple(
    secret_block_name(account, field) for account in AccountType for field in ("username", "password")
)


def prefect_api_configured() -> bool:
    """True when a Prefect API is reachable by configuration: PREFECT_API_URL is set or a flow run is active.

    Without either, touching a block would start a temporary local server (10-20 s) only to find nothing.
    """
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url) or FlowRunContext.get() is not None


@dataclass
class _BlockReader:
    """Loads Secret blocks, giving up on the rest once the API turned out unreachable."""

    unreachable: bool = False

    def read(self, name: str) -> SecretStr | None:
        """The block's value, or None when the block does not exist or the API cannot be reached."""
        if self.unreachable:
            return None
        from prefect.blocks.system import Secret
        from prefect.utilities.asyncutils import run_coro_as_sync

        try:
            block: Secret[Any] = run_coro_as_sync(Secret.aload(name))
        except ValueError as exc:
            if not str(exc).startswith(_BLOCK_NOT_FOUND):
                raise
            log.debug("Prefect Secret block %r not found; using the environment", name)
            return None
        except httpx.TransportError as exc:
            self.unreachable = True
            log.debug(
                "Prefect API unreachable (%s); credentials come from the environment", type(exc).__name__
            )
            return None
        # Not Secret.get(): it JSON-decodes, which would turn a password like "0123" into the number 123.
        value = block.value.get_secret_value()
        return SecretStr(str(value)) if value is not None and str(value) else None


def resolve_account_config(settings: Settings, account: AccountType) -> AccountConfig:
    """The account's config, each credential from its Secret block when present, else from the environment.

    Raises MissingCredentialsError (naming the environment variables) when neither source has it.
    """
    username: str | None = None
    password: SecretStr | None = None
    if prefect_api_configured():
        reader = _BlockReader()
        block_username = reader.read(secret_block_name(account, "username"))
        username = block_username.get_secret_value() if block_username else None
        password = reader.read(secret_block_name(account, "password"))
        log.debug(
            "%s: username from %s, password from %s",
            account.value,
            "Secret block" if username else "environment",
            "Secret block" if password else "environment",
        )
    return settings.account_config(account, password=password, username=username)
