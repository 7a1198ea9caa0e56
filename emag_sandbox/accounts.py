"""The accounts a sandbox serves: each with its name, platform, kind, catalogue size, credentials and rate."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from emag_sandbox.catalogue import DEFAULT_PRODUCTS, KINDS, MAIN_SHARE
from emag_sync.platforms import PLATFORMS, platform_named

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
# The two accounts of one seller that the sandbox serves when none are named; their environment variables
# are the ones emag-sync has always read (EMAG_MAIN_*, EMAG_FBE_*).
LEGACY_NAMES = ("main", "fbe")


@dataclass(frozen=True)
class SandboxAccount:
    """One eMAG account the sandbox serves. Empty ``username``/``password``: ``sandbox-<name>`` and
    ``sandbox-<name>-password`` (well-known test values); ``requests_per_second`` None: the sandbox's."""

    name: str  # a slug: ro-fbe, acme-bg-main
    platform: str = "emag-ro"  # a code of emag_sync.platforms (ro, bg, hu accepted, stored as the code)
    kind: str = "main"  # main or fbe: which of the catalogue generator's two shapes
    products: int = DEFAULT_PRODUCTS
    username: str = ""
    password: str = ""
    requests_per_second: float | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"account name must be lower-case letters, digits and '-' (like ro-fbe), got {self.name!r}"
            )
        object.__setattr__(self, "platform", platform_named(self.platform).code)
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be {' or '.join(KINDS)}, got {self.kind!r}")
        if self.products < 0:
            raise ValueError(f"{self.name}: products must be >= 0, got {self.products}")
        if self.requests_per_second is not None and self.requests_per_second <= 0:
            raise ValueError(f"{self.name}: requests_per_second must be > 0, got {self.requests_per_second}")
        object.__setattr__(self, "username", self.username or f"sandbox-{self.name}")
        object.__setattr__(self, "password", self.password or f"sandbox-{self.name}-password")

    @property
    def env_prefix(self) -> str:
        """``EMAG_<NAME>_``: the name upper-cased, ``-`` as ``_`` (EMAG_ACME_BG_MAIN_)."""
        return "EMAG_" + self.name.upper().replace("-", "_") + "_"

    @property
    def login(self) -> tuple[str, str]:
        return self.username, self.password


def default_accounts(
    products: int = DEFAULT_PRODUCTS, main_products: int | None = None, platform: str = "emag-ro"
) -> list[SandboxAccount]:
    """One seller's MAIN (``main_products``, default 85% of FBE) and FBE (``products``) on ``platform``."""
    main_size = round(products * MAIN_SHARE) if main_products is None else main_products
    return [
        SandboxAccount("main", platform, "main", main_size),
        SandboxAccount("fbe", platform, "fbe", products),
    ]


def parse_account(spec: str, default_products: int = DEFAULT_PRODUCTS) -> SandboxAccount:
    """``NAME:PLATFORM:KIND[:PRODUCTS]`` (``bg-fbe:emag-bg:fbe:500``); ValueError says what is accepted."""
    parts = [part.strip() for part in spec.split(":")]
    accepted = (
        f"NAME:PLATFORM:KIND[:PRODUCTS] with PLATFORM one of {', '.join(PLATFORMS)} and KIND main or fbe"
    )
    if len(parts) not in (3, 4):
        raise ValueError(f"{spec!r} is not {accepted}")
    name, platform, kind = parts[:3]
    products = default_products
    if len(parts) == 4:
        if not parts[3].isdigit():
            raise ValueError(f"{spec!r}: PRODUCTS must be a whole number >= 0, got {parts[3]!r}")
        products = int(parts[3])
    try:
        return SandboxAccount(name, platform, kind.lower(), products)
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None


def unique_names(accounts: Sequence[SandboxAccount]) -> None:
    """ValueError naming a name given twice."""
    seen: set[str] = set()
    for account in accounts:
        if account.name in seen:
            raise ValueError(f"account name {account.name!r} is given twice; each account needs its own")
        seen.add(account.name)
