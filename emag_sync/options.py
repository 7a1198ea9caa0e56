"""The knobs of one sync run, declared once: the flow takes them as a parameter and the CLI builds them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from emag_sync.limits import MAX_ITEMS_PER_PAGE
from emag_sync.settings import DEFAULT_MAX_DEACTIVATED_COUNT

# What the flows' ``accounts`` parameter takes: registered names, comma-separated, or ``all``; ``both``
# (main and fbe) and ``main`` / ``fbe`` are the two accounts of earlier versions. A name that is not
# registered fails the run at once, in one line listing the registered ones.
Accounts = Annotated[
    str,
    Field(
        min_length=1,
        max_length=10_000,
        pattern=r"^\s*[A-Za-z0-9-]+(\s*,\s*[A-Za-z0-9-]+)*\s*$",
        description="registered account names, comma-separated (e.g. ro-main,bg-main), or all; both = main,fbe",
    ),
]


# sync-all: how many accounts one child flow run syncs in its process. A flow run costs a process start
# (imports, flow-run creation: seconds) and each account mostly waits on eMAG's 3 requests/s, so one process
# carries many; README "Scaling out" has the measurement behind the default.
DEFAULT_ACCOUNTS_PER_RUN = 10
MAX_ACCOUNTS_PER_RUN = 200


class SyncOptions(BaseModel):
    """How one sync reads and loads; the Prefect UI shows this model as a form with these descriptions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pages_per_batch: int = Field(
        default=5, ge=1, le=1000, description="pages of eMAG's catalogue loaded per database transaction"
    )
    items_per_page: int = Field(
        default=MAX_ITEMS_PER_PAGE,
        ge=1,
        le=MAX_ITEMS_PER_PAGE,
        description=f"records per page asked from eMAG (eMAG allows at most {MAX_ITEMS_PER_PAGE})",
    )
    resume: bool = Field(
        default=False,
        description="continue the account's latest unfinished run (a Retry in the Prefect UI resumes by itself)",
    )
    wait_for_lock: bool = Field(
        default=False,
        description="when another sync of the account is running, wait for it instead of failing at once",
    )
    max_deactivated_share: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="the largest share of the account's active offers one run may deactivate (each confirmed "
        "gone by a read of its id); above it, and above max_deactivated_count, the run fails and deactivates "
        "nothing. Raise it (up to 1) when many offers were really removed on eMAG",
    )
    max_deactivated_count: int | None = Field(
        default=None,
        ge=0,
        description="how many offers one run may deactivate whatever share of the catalogue they are (a small "
        "shop removing one of its few offers); unset: EMAG_MAX_DEACTIVATED_COUNT where the sync runs "
        f"(default {DEFAULT_MAX_DEACTIVATED_COUNT})",
    )
