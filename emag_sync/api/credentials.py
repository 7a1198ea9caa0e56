"""Account credentials from Prefect Secret blocks when they exist, else from the environment."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from emag_sync.accounts import Account
from emag_sync.settings import AccountConfig, Settings, credential_variable

log = logging.getLogger(__name__)

# Prefix of Prefect's "no such block" error (blocks/core.py raises a plain ValueError with this text).
_BLOCK_NOT_FOUND = "Unable to find block document"


def secret_block_name(account: Account, field: str) -> str:
    """``emag-main-username``, ``emag-acme-bg-main-password``, ...: the Secret block holding one credential."""
    return f"emag-{account.name}-{field}"


def secret_block_names(accounts: Iterable[Account]) -> tuple[str, ...]:
    return tuple(
        secret_block_name(account, field) for account in accounts for field in ("username", "password")
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


def resolve_account_config(settings: Settings, account: Account) -> AccountConfig:
    """The account's config, each credential from its Secret block when present, else from the environment.

    Secret blocks win. Where each credential came from is logged at INFO by name (never its value), and a
    different value in the environment is a WARNING: an operator rotating a password in .env while the
    block still holds the old one must hear of it. Raises MissingCredentialsError (naming the environment
    variables) when neither source has it.
    """
    from_blocks: dict[str, SecretStr | None] = {"username": None, "password": None}
    if prefect_api_configured():
        from_blocks = _blocks_of(account)
    block_username = from_blocks["username"]
    config = settings.account_config(
        account,
        password=from_blocks["password"],
        username=block_username.get_secret_value() if block_username else None,
    )
    _log_sources(settings, account, from_blocks)
    return config


# The blocks read for an account within one flow run: its preflight and its sync resolve the account's
# credentials one after the other (four API reads each); a new run reads them afresh.
_block_cache: dict[tuple[str, str, str], dict[str, SecretStr | None]] = {}
_block_cache_lock = threading.Lock()


def _blocks_of(account: Account) -> dict[str, SecretStr | None]:
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings

    context = FlowRunContext.get()
    run = str(context.flow_run.id) if context and context.flow_run else ""
    key = (get_current_settings().api.url or "", account.name, run)
    with _block_cache_lock:
        if run and key in _block_cache:
            return dict(_block_cache[key])
    reader = _BlockReader()
    found = {field: reader.read(secret_block_name(account, field)) for field in ("username", "password")}
    if run and not reader.unreachable:
        with _block_cache_lock:
            _block_cache[key] = dict(found)
    return found


_logged: set[tuple[str, str, tuple[bool, ...]]] = set()


def _log_sources(settings: Settings, account: Account, from_blocks: dict[str, SecretStr | None]) -> None:
    """Once per account, run (or process outside a run) and sources: where each credential came from."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = str(context.flow_run.id) if context and context.flow_run else ""
    key = (account.name, run, tuple(value is not None for value in from_blocks.values()))
    if key in _logged:
        return
    _logged.add(key)
    sources = []
    for field, block_value in from_blocks.items():
        variable, block = credential_variable(account, field), secret_block_name(account, field)
        env = settings.credential(account, field)
        env_text = env.get_secret_value() if isinstance(env, SecretStr) else env
        if block_value is None:
            sources.append(f"{field} from the environment ({variable})")
            continue
        sources.append(f"{field} from Prefect Secret block {block}")
        if env_text is not None and env_text != block_value.get_secret_value():
            log.warning(
                "%s: %s in the environment differs from Secret block %s, and the block wins; update the block "
                "(emag-sync setup-prefect) or delete it to use the environment",
                account.title,
                variable,
                block,
            )
    log.info("%s: %s", account.title, "; ".join(sources))


def credential_sources(settings: Settings, account: Account) -> dict[str, str | None]:
    """Where each credential of ``account`` would be found (``Prefect Secret block emag-x-password``,
    ``the environment (EMAG_X_PASSWORD)``, ``.env (...)``), or None when nowhere; never a value. Blocks
    are looked up only when a Prefect API is configured, as the syncs do."""
    from_blocks: dict[str, SecretStr | None] = {"username": None, "password": None}
    if prefect_api_configured():
        from_blocks = _blocks_of(account)
    found: dict[str, str | None] = {}
    for field in ("username", "password"):
        variable = credential_variable(account, field)
        source = settings.credential_source(account, field)
        if from_blocks[field] is not None:
            found[field] = f"Prefect Secret block {secret_block_name(account, field)}"
        elif source is not None:
            found[field] = f"{source} ({variable})"
        else:
            found[field] = None
    return found
