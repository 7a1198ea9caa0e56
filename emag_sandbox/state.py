"""The sandbox's mutable world: its accounts' catalogues, their changes, faults, rate windows and logs."""

from __future__ import annotations

import bisect
import copy
import dataclasses
import json
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from emag_sandbox.accounts import SandboxAccount, default_accounts, unique_names
from emag_sandbox.catalogue import (
    DEFAULT_PRODUCTS,
    MAX_ACCOUNTS,
    PRICE_SCALE,
    Catalogue,
    format_price,
)
from emag_sandbox.hostile import kind_at, kinds_from, make_hostile
from emag_sync.accounts import AccountType
from emag_sync.limits import (
    MAX_ENTITIES_PER_SAVE,
    MAX_HANDLING_DAYS,
    MAX_ITEMS_PER_PAGE,
    MAX_OFFER_ID,
    MAX_STOCK,
    PRICE_DECIMALS,
    REQUESTS_PER_MINUTE,
    REQUESTS_PER_SECOND,
)

DEFAULT_ITEMS_PER_PAGE = MAX_ITEMS_PER_PAGE
OFFER_STATUSES = (0, 1, 2)
RATE_LIMIT_MESSAGE = "API rate limit exceeded"
RATE_WINDOW_SECONDS = 1.0
MINUTE_SECONDS = 60.0
SERVER_ERRORS = (500, 502, 504)
PRODUCT_OFFER_SAVE_REQUIRED = ("id", "status", "sale_price", "vat_id", "handling_time", "stock")
PRICE_FIELDS = ("sale_price", "recommended_price", "min_sale_price", "max_sale_price")
MALFORMED_KINDS = ("missing_part_number", "bad_sale_price", "missing_id")
_KEY_FILTERS = ("id", "part_number", "part_number_key")
_INT_FILTERS = (
    "id",
    "status",
    "general_stock",
    "estimated_stock",
    "offer_validation_status",
    "validation_status",
    "translation_validation_status",
)
_STR_FILTERS = ("part_number", "part_number_key")


class UnknownAccountError(LookupError):
    """No account of the sandbox has this name; the message names the ones it has."""


class RequestRefused(Exception):
    """eMAG refuses the request: HTTP 200 with ``isError: true`` and these messages."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


@dataclass
class Faults:
    """Faults injected into one account's answers. Defaults mean a healthy eMAG."""

    latency_seconds: float = 0.0
    error_rate: float = 0.0  # share of requests answered 500/502/504
    force_429: int = 0  # the next N requests answer 429
    error_pages: set[int] = field(default_factory=set)  # product_offer/read pages answering isError
    malformed_rate: float = 0.0  # share of records served malformed (the same records on every read)
    fail_from_request: int | None = None  # after N requests (since the faults were set) every call fails
    # eMAG answering an outage as success: count 0 and empty pages for every read.
    empty_catalogue: bool = False
    # Offset paging without a snapshot: once, right after serving read page N, remove ``mutate_remove`` live
    # records from the pages already served (the rest shift up, so the reader misses one) and append
    # ``mutate_add`` new records at the end.
    mutate_after_page: int | None = None
    mutate_remove: int = 0
    mutate_add: int = 0
    # kinds of emag_sandbox.hostile.HOSTILE_KINDS ("all": every kind), one record each, on every read
    hostile_records: list[str] = field(default_factory=list)
    # offer id -> eMAG's message: a save naming the offer is refused whole with it, valid values or not
    # (as eMAG answers "Offer ... is locked for editing")
    refuse_saves: dict[int, str] = field(default_factory=dict)
    save_answer_delay_seconds: float = 0.0  # an applied save is answered this much later

    def __post_init__(self) -> None:
        for name in ("error_rate", "malformed_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"faults: {name} must be between 0 and 1, got {value}")
        if self.latency_seconds < 0 or self.force_429 < 0 or self.save_answer_delay_seconds < 0:
            raise ValueError("faults: latency_seconds, force_429 and save_answer_delay_seconds must be >= 0")
        if self.fail_from_request is not None and self.fail_from_request < 0:
            raise ValueError("faults: fail_from_request must be >= 0 or null")
        if self.mutate_remove < 0 or self.mutate_add < 0:
            raise ValueError("faults: mutate_remove and mutate_add must be >= 0")
        self.error_pages = {int(page) for page in self.error_pages}
        self.hostile_records = kinds_from(self.hostile_records)
        self.refuse_saves = {int(offer_id): str(message) for offer_id, message in self.refuse_saves.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Faults:
        """From the control endpoint's JSON; unknown names are refused so typos do not pass silently.

        The command line's names are taken too (``error_page``: one page or a list, ``latency``,
        ``shift_after_page``; ``-`` for ``_``), and each value must have its field's type (FAULT_FIELDS)."""
        values: dict[str, Any] = {}
        for name, value in data.items():
            key = str(name).replace("-", "_")
            if key == "shift_after_page":
                values.update(
                    mutate_after_page=value,
                    mutate_remove=int(value is not None),
                    mutate_add=int(value is not None),
                )
                continue
            values[_FAULT_ALIASES.get(key, key)] = value
        unknown = sorted(set(values) - set(FAULT_FIELDS))
        if unknown:
            raise ValueError(
                f"faults: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FAULT_FIELDS))} "
                f"(and {', '.join(sorted([*_FAULT_ALIASES, 'shift_after_page']))})"
            )
        for name, value in values.items():
            values[name] = _fault_value(name, value)
        return cls(**{k: v for k, v in values.items() if v is not None or k in _NULLABLE_FAULTS})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_pages"] = sorted(self.error_pages)
        data["refuse_saves"] = {
            str(offer_id): message for offer_id, message in sorted(self.refuse_saves.items())
        }
        return data


# The control endpoint's fields and the JSON each takes (the README's table says the same).
FAULT_FIELDS: dict[str, str] = {
    "latency_seconds": "number >= 0",
    "error_rate": "number 0..1",
    "force_429": "integer >= 0",
    "error_pages": "integer or list of integers",
    "malformed_rate": "number 0..1",
    "fail_from_request": "integer >= 0 or null",
    "empty_catalogue": "boolean",
    "mutate_after_page": "integer >= 1 or null",
    "mutate_remove": "integer >= 0",
    "mutate_add": "integer >= 0",
    "hostile_records": "list of strings, or one comma-separated string",
    "refuse_saves": 'object {"<offer id>": "<message>"}',
    "save_answer_delay_seconds": "number >= 0",
}
# The command line's option names for the same fields.
_FAULT_ALIASES = {"error_page": "error_pages", "latency": "latency_seconds"}
_NULLABLE_FAULTS = frozenset({"fail_from_request", "mutate_after_page"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fault_value(name: str, value: Any) -> Any:
    """``value`` as field ``name`` holds it, or ValueError naming the field, the value and its type."""
    kind = FAULT_FIELDS[name]
    if value is None:
        ok = name in _NULLABLE_FAULTS
    elif name == "error_pages":
        value = [value] if _is_int(value) else value
        ok = isinstance(value, list) and all(_is_int(page) for page in value)
        value = set(value) if ok else value
    elif name == "hostile_records":
        value = value.split(",") if isinstance(value, str) else value
        ok = isinstance(value, list) and all(isinstance(k, str) for k in value)
        value = [k.strip() for k in value if k.strip()] if ok else value
    elif name == "refuse_saves":
        ok = isinstance(value, dict) and all(isinstance(m, str) for m in value.values())
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind.startswith("integer"):
        ok = _is_int(value)
    else:
        ok = (_is_int(value) or isinstance(value, float)) and value == value  # a number, not NaN
    if not ok:
        raise ValueError(f"faults: {name} takes {kind}, got {json.dumps(value, default=str)}")
    return value


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the sandbox saw it; ``account`` is None when the credentials matched no account."""

    account: str | None  # the account's name
    resource: str
    action: str
    page: int | None
    status_code: int
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "account": None if self.account is None else str(self.account),
            "resource": self.resource,
            "action": self.action,
            "page": self.page,
            "status_code": self.status_code,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class AcceptedSave:
    """One entity of a save that the sandbox applied."""

    account: str  # the account's name
    resource: str
    action: str
    entity: dict[str, Any]
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "account": str(self.account),
            "resource": self.resource,
            "action": self.action,
            "entity": self.entity,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True)
class Gate:
    """What the sandbox answers before looking at the request: proceed, 429 or a 5xx."""

    status_code: int | None  # None: handle the request
    latency_seconds: float
    limit: int | None  # X-RateLimit-Limit-3second when rate limiting is on
    remaining: int | None


class _SlidingWindow:
    """At most ``limit`` admitted arrivals in any ``window`` seconds (and ``per_minute`` in any 60 s)."""

    def __init__(self, limit: int, window: float, per_minute: int) -> None:
        self.limit = limit
        self.window = window
        self.per_minute = per_minute
        self._arrivals: list[float] = []  # admitted arrival times, sorted

    def admit(self, now: float) -> tuple[bool, int]:
        """Admit an arrival at ``now`` (monotonic seconds); refused arrivals do not use up the budget.

        Concurrent requests may be stamped slightly out of order, so the check holds for every window
        around ``now``, not only the one ending at it.
        """
        arrivals = self._arrivals
        horizon = max(MINUTE_SECONDS, self.window)
        stale = bisect.bisect_right(arrivals, max(now, arrivals[-1] if arrivals else now) - horizon)
        del arrivals[:stale]
        if not (
            _fits(arrivals, now, self.limit, self.window)
            and _fits(arrivals, now, self.per_minute, MINUTE_SECONDS)
        ):
            return False, 0
        bisect.insort(arrivals, now)
        recent = len(arrivals) - bisect.bisect_right(arrivals, now - self.window)
        return True, max(0, self.limit - recent)


def _fits(times: list[float], new: float, count: int, window: float) -> bool:
    """Whether adding ``new`` keeps at most ``count`` of ``times`` in any half-open ``window``."""
    position = bisect.bisect_right(times, new)
    around = [*times[max(0, position - count) : position], new, *times[position : position + count]]
    return all(around[i + count] - around[i] >= window for i in range(len(around) - count))


def _unit(*parts: int) -> float:
    """A deterministic number in [0, 1) from integers (splitmix64), for per-record decisions."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value = (value ^ (value >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 29
    return value / 2**64


def _now() -> datetime:
    return datetime.now(UTC)


_LEGACY_MEMBERS: dict[str, str] = {account.value: account for account in AccountType}


def _check_shared_logins(accounts: Sequence[SandboxAccount], requests_per_second: float) -> None:
    """Accounts sharing a login share one budget on eMAG, so they must not be given different rates."""
    rates: dict[tuple[str, str], tuple[str, float]] = {}
    for account in accounts:
        rate = requests_per_second if account.requests_per_second is None else account.requests_per_second
        first = rates.setdefault(account.login, (account.name, rate))
        if first[1] != rate:
            raise ValueError(
                f"accounts {first[0]} and {account.name} share a login, so one budget, but were given "
                f"{first[1]:g} and {rate:g} requests per second"
            )


def _canonical(name: str) -> str:
    """The key an account is held under: ``main`` and ``fbe`` as the AccountType members (a str), so that
    code written for today's two accounts (``request.account is AccountType.FBE``) keeps working."""
    return _LEGACY_MEMBERS.get(name, name)


@dataclass
class _Account:
    name: str
    catalogue: Catalogue
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)  # sorted record indices
    renamed: dict[str, int] = field(default_factory=dict)  # part_number given by rename_records -> index
    requests_since_faults: int = 0
    error_rng: random.Random = field(default_factory=random.Random)
    version: int = 0  # bumped on every change that alters what a read returns
    scan_cache: dict[tuple[tuple[str, object], ...], list[int]] = field(default_factory=dict)


class SandboxState:
    """The accounts of one seller or many; records are generated on demand, only changes are stored.

    Without ``accounts``: today's two accounts of one seller, ``main`` (``main_products``, default 85% of
    ``products``) and ``fbe`` (``products``) on ``platform``. With ``accounts``, those three are not
    used. Every method taking an account takes its name (``AccountType.MAIN`` is the name ``main``).

    Thread-safe: the server thread answers while a test changes faults or reads the logs. A save with
    any invalid entity is refused whole (one message per bad id) and applies nothing.
    """

    def __init__(
        self,
        products: int = DEFAULT_PRODUCTS,
        main_products: int | None = None,
        seed: int = 7,
        rate_limit: bool = True,
        requests_per_second: float = REQUESTS_PER_SECOND,
        per_minute: int = REQUESTS_PER_MINUTE,
        platform: str = "ro",
        accounts: Sequence[SandboxAccount] | None = None,
    ) -> None:
        if requests_per_second <= 0 or per_minute <= 0:
            raise ValueError("requests_per_second and per_minute must be > 0")
        given = (
            list(accounts) if accounts is not None else default_accounts(products, main_products, platform)
        )
        if not 1 <= len(given) <= MAX_ACCOUNTS:
            raise ValueError(f"a sandbox serves 1 to {MAX_ACCOUNTS} accounts, got {len(given)}")
        unique_names(given)
        self.seed = seed
        self.platform = platform
        self.rate_limit = rate_limit
        self.requests_per_second = requests_per_second
        self.per_minute = per_minute
        self.accounts: dict[str, SandboxAccount] = {_canonical(a.name): a for a in given}
        _check_shared_logins(given, requests_per_second)
        # mutable: a test may give an account other credentials before serving it
        self.credentials: dict[str, tuple[str, str]] = {name: a.login for name, a in self.accounts.items()}
        self._generated = {
            name: Catalogue(name, a.products, seed, a.platform, a.kind, position)
            for position, (name, a) in enumerate(self.accounts.items(), start=1)
        }
        self.catalogues = dict(self._generated)
        self.faults: dict[str, Faults] = {}
        self.request_log: list[LoggedRequest] = []
        self.saves: list[AcceptedSave] = []
        self._accounts: dict[str, _Account] = {}
        # one sliding window per login, made on first use: two accounts with one login share a budget
        self._windows: dict[tuple[str, str], _SlidingWindow] = {}
        self._lock = threading.RLock()
        self._change_counter = 0
        self.reset()

    # --- setup and control ------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the freshly generated catalogues: no changes, faults, logs or rate history."""
        with self._lock:
            self.catalogues = dict(self._generated)
            for name, catalogue in self.catalogues.items():
                self._accounts[name] = _Account(
                    name=name, catalogue=catalogue, error_rng=self._error_rng(name)
                )
                self.faults[name] = Faults()
            self._windows.clear()
            self.request_log.clear()
            self.saves.clear()

    def account_named(self, name: str) -> str:
        """The name an account is held under; UnknownAccountError naming the accounts otherwise."""
        return self._state(name).name

    def set_faults(self, account: str, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the account's faults (``faults`` or keyword fields); restarts fail_from_request's count."""
        with self._lock:
            new = faults if faults is not None else Faults(**changes)
            state = self._state(account)
            self.faults[state.name] = new
            state.requests_since_faults = 0
            state.error_rng = self._error_rng(state.name)
            self._changed(state)
            return new

    def _error_rng(self, account: str) -> random.Random:
        """The same seed and account give the same sequence of injected errors."""
        return random.Random(self.seed * 10 + self.catalogues[account].position)

    def authenticate(self, username: str, password: str, platform: str | None = None) -> str | None:
        """The name of the account these credentials open (on ``platform``, a code, when given), or None
        (answered 401). A login shared by two accounts of one platform opens the first of them."""
        for name, login in self.credentials.items():
            if login == (username, password) and platform in (None, self.accounts[name].platform):
                return name
        return None

    def log(self, account: str | None, resource: str, action: str, page: int | None, status: int) -> None:
        with self._lock:
            name = None if account is None else self.account_named(account)
            self.request_log.append(LoggedRequest(name, resource, action, page, status, _now()))

    def gate(self, account: str, *, now: float | None = None) -> Gate:
        """Forced 429s, the rate limit, then injected failures, in that order; counts the request."""
        with self._lock:
            state = self._state(account)
            faults = self.faults[state.name]
            window = self._window(state.name)
            limit = window.limit if self.rate_limit else None
            if faults.force_429 > 0:
                faults.force_429 -= 1
                return Gate(429, 0.0, window.limit, 0)
            remaining = None
            if self.rate_limit:
                admitted, remaining = window.admit(time.monotonic() if now is None else now)
                if not admitted:
                    return Gate(429, 0.0, limit, 0)
            state.requests_since_faults += 1
            status: int | None = None
            if (
                faults.fail_from_request is not None
                and state.requests_since_faults > faults.fail_from_request
            ):
                # alternate a server error and an unreachable backend, as when eMAG goes away
                status = 500 if state.requests_since_faults % 2 else 503
            elif faults.error_rate > 0 and state.error_rng.random() < faults.error_rate:
                status = SERVER_ERRORS[state.error_rng.randrange(len(SERVER_ERRORS))]
            return Gate(status, faults.latency_seconds, limit, remaining)

    # --- reads ------------------------------------------------------------------------------------
    def read(self, account: str, data: object) -> list[dict[str, Any]]:
        """product_offer/read: one page of records matching the filters."""
        params = _mapping(data)
        page, per_page = _paging(params)
        filters = _filters(params)
        with self._lock:
            state = self._state(account)
            faults = self.faults[state.name]
            if page in faults.error_pages:
                raise RequestRefused([f"Could not read page {page} of product offers, please retry later"])
            if faults.empty_catalogue:
                return []
            offset = (page - 1) * per_page
            by_product = any(key in filters for key in _KEY_FILTERS)
            if not filters:
                indices = self._live_slice(state, offset, per_page)
            else:
                indices = self._matching(state, filters)[offset : offset + per_page]
            served = [self._served(account, index, by_product=by_product) for index in indices]
            if not filters and faults.mutate_after_page == page:
                faults.mutate_after_page = None  # once
                self._shift_under_the_reader(account, offset + len(indices), faults)
            return served

    def _shift_under_the_reader(self, account: str, served_up_to: int, faults: Faults) -> None:
        """Remove records from the part of the catalogue a read has already passed; append new ones."""
        state = self._state(account)
        passed = self._live_slice(state, 0, served_up_to)
        for index in passed[: faults.mutate_remove]:
            bisect.insort(state.removed, index)
        if faults.mutate_remove:
            self._changed(state)
        if faults.mutate_add:
            self.add_records(account, faults.mutate_add)

    def count(self, account: str, data: object) -> dict[str, str]:
        """product_offer/count: numbers as strings, like eMAG."""
        params = _mapping(data)
        _, per_page = _paging(params)
        filters = _filters(params)
        with self._lock:
            state = self._state(account)
            total = (
                len(self._matching(state, filters)) if filters else state.catalogue.size - len(state.removed)
            )
            if self.faults[state.name].empty_catalogue:
                total = 0
        pages = -(-total // per_page)
        return {"noOfItems": str(total), "noOfPages": str(pages), "itemsPerPage": str(per_page)}

    def catalogue_records(self, account: str) -> list[dict[str, Any]]:
        """Every record a full read returns now, in page order (O(catalogue): for small catalogues)."""
        with self._lock:
            state = self._state(account)
            removed = set(state.removed)
            return [
                self._served(account, index, by_product=False)
                for index in range(state.catalogue.size)
                if index not in removed
            ]

    def record_by_id(self, account: str, emag_id: int) -> dict[str, Any] | None:
        """The record with this id as a read filtered by id returns it, or None."""
        with self._lock:
            state = self._state(account)
            index = self._live_index_of_id(state, emag_id)
            return None if index is None else self._served(account, index, by_product=True)

    def record_by_sku(self, account: str, sku: str) -> dict[str, Any] | None:
        """The record with this part_number (unmalformed), or None."""
        with self._lock:
            state = self._state(account)
            index = self._index_of_sku(state, sku)
            if index is None or self._is_removed(state, index):
                return None
            return self._current(state, index)

    # --- saves ------------------------------------------------------------------------------------
    def save(self, account: str, resource: str, action: str, data: object) -> None:
        """offer/save or product_offer/save: validate every entity, then apply all or nothing."""
        entities = data if isinstance(data, list) else [data]
        if not entities:
            raise RequestRefused(["No entities to save"])
        if len(entities) > MAX_ENTITIES_PER_SAVE:
            raise RequestRefused(
                [f"Maximum {MAX_ENTITIES_PER_SAVE} entities per request, got {len(entities)}"]
            )
        required = PRODUCT_OFFER_SAVE_REQUIRED if resource == "product_offer" else ("id",)
        with self._lock:
            state = self._state(account)
            refusals = self.faults[state.name].refuse_saves
            planned: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
            errors: list[str] = []
            for position, entity in enumerate(entities, start=1):
                try:
                    index, changes = self._validate_entity(state, entity, position, required)
                except RequestRefused as refused:
                    errors.extend(refused.messages)
                    continue
                refusal = refusals.get(state.catalogue.id_of(index))
                if refusal is not None:
                    errors.append(refusal)
                    continue
                planned.append((index, changes, dict(entity)))
            if errors:
                raise RequestRefused(errors)
            at = _now()
            for index, changes, entity in planned:
                state.overrides.setdefault(index, {}).update(changes)
                self.saves.append(AcceptedSave(state.name, resource, action, entity, at))
            self._changed(state)

    # --- changes between runs ---------------------------------------------------------------------
    def remove_records(self, account: str, n: int, *, ids: Iterable[int] = ()) -> list[int]:
        """Remove ``n`` live records (chosen deterministically) plus ``ids``; returns the removed ids."""
        with self._lock:
            state = self._state(account)
            chosen = self._pick(state, n)
            for emag_id in ids:
                index = self._live_index_of_id(state, emag_id)
                if index is None:
                    raise ValueError(f"{account}: no live record with id {emag_id}")
                chosen.append(index)
            chosen = sorted(set(chosen))
            for index in chosen:
                bisect.insort(state.removed, index)
            self._changed(state)
            return [state.catalogue.id_of(index) for index in chosen]

    def add_records(self, account: str, n: int) -> list[int]:
        """Append ``n`` new records at the end of the catalogue (as a seller adding offers); their ids."""
        if n < 0:
            raise ValueError(f"{account}: cannot add {n} records")
        with self._lock:
            state = self._state(account)
            first = state.catalogue.size
            state.catalogue = dataclasses.replace(state.catalogue, size=first + n)
            self.catalogues[state.name] = state.catalogue
            self._changed(state)
            return [state.catalogue.id_of(index) for index in range(first, first + n)]

    def rename_records(self, account: str, ids: Iterable[int]) -> dict[int, str]:
        """Give live records a new part_number under the same id (a seller renaming a SKU, which eMAG
        allows); returns each id's new part_number."""
        with self._lock:
            state = self._state(account)
            renamed: dict[int, str] = {}
            for emag_id in ids:
                index = self._live_index_of_id(state, emag_id)
                if index is None:
                    raise ValueError(f"{account}: no live record with id {emag_id}")
                new = f"{self._current(state, index)['part_number']}-R"
                state.overrides.setdefault(index, {})["part_number"] = new
                state.renamed[new] = index
                renamed[emag_id] = new
            self._changed(state)
            return renamed

    def restore_records(self, account: str, ids: Iterable[int]) -> list[int]:
        """Bring removed records back at their place in the catalogue (inside pages a read may have passed)."""
        with self._lock:
            state = self._state(account)
            restored = []
            for emag_id in ids:
                index = state.catalogue.index_of_id(int(emag_id))
                if index is None or not self._is_removed(state, index):
                    raise ValueError(f"{account}: no removed record with id {emag_id}")
                state.removed.remove(index)
                restored.append(int(emag_id))
            self._changed(state)
            return restored

    def reprice_records(self, account: str, n: int) -> list[int]:
        """Give ``n`` live records (chosen deterministically) a new sale_price inside their range."""
        with self._lock:
            state = self._state(account)
            chosen = self._pick(state, n)
            rng = random.Random(self.seed * 7919 + self._change_counter)
            for index in chosen:
                record = self._current(state, index)
                low = _units(record["min_sale_price"])
                span = _units(record["max_sale_price"]) - low
                old = _units(record["sale_price"])
                step = 100 if span >= 200 else 1  # whole cents when the range allows it
                new = low + rng.randrange(span // step + 1) * step
                if new == old:
                    new = low + span if old == low else low
                state.overrides.setdefault(index, {})["sale_price"] = format_price(new)
            self._changed(state)
            return [state.catalogue.id_of(index) for index in chosen]

    # --- internals --------------------------------------------------------------------------------
    def _state(self, account: str) -> _Account:
        # str(): an emag_sync Account stands for its name, as an AccountType member does
        state = self._accounts.get(str(account))
        if state is None:
            known = ", ".join(self._accounts)
            raise UnknownAccountError(f"unknown account {str(account)!r}; this sandbox has {known}")
        return state

    def _window(self, account: str) -> _SlidingWindow:
        """The sliding window of the account's login; the strictest rate of the accounts sharing it."""
        login = self.credentials[account]
        window = self._windows.get(login)
        if window is None:
            sharing = [self.accounts[name] for name, other in self.credentials.items() if other == login]
            per_second = min(self._rate_of(a)[0] for a in sharing)
            per_minute = min(self._rate_of(a)[1] for a in sharing)
            # N/s is "at most N in any 1 s window"; a fractional rate gets a longer window instead
            limit = max(1, int(per_second * RATE_WINDOW_SECONDS))
            window = self._windows[login] = _SlidingWindow(limit, limit / per_second, per_minute)
        return window

    def _rate_of(self, account: SandboxAccount) -> tuple[float, int]:
        """Requests per second and per minute; an account's own rate brings its own minute budget (60 x)."""
        if account.requests_per_second is None:
            return self.requests_per_second, self.per_minute
        return account.requests_per_second, max(1, round(account.requests_per_second * MINUTE_SECONDS))

    def _changed(self, state: _Account) -> None:
        state.version += 1
        state.scan_cache.clear()
        self._change_counter += 1

    def _pick(self, state: _Account, n: int) -> list[int]:
        live = state.catalogue.size - len(state.removed)
        if not 0 <= n <= live:
            raise ValueError(f"{state.name}: cannot pick {n} of {live} live records")
        rng = random.Random(self.seed * 104_729 + self._change_counter)
        removed = set(state.removed)
        chosen: list[int] = []
        taken: set[int] = set()
        while len(chosen) < n:
            index = rng.randrange(state.catalogue.size)
            if index not in removed and index not in taken:
                taken.add(index)
                chosen.append(index)
        return sorted(chosen)

    @staticmethod
    def _is_removed(state: _Account, index: int) -> bool:
        position = bisect.bisect_left(state.removed, index)
        return position < len(state.removed) and state.removed[position] == index

    @staticmethod
    def _index_of_sku(state: _Account, sku: str) -> int | None:
        """The record whose part_number is ``sku`` now (renames included), removed or not."""
        index = state.renamed.get(sku, state.catalogue.index_of_sku(sku))
        if index is None:
            return None
        current = state.overrides.get(index, {}).get("part_number", state.catalogue.sku_of(index))
        return index if current == sku else None

    def _live_index_of_id(self, state: _Account, emag_id: int) -> int | None:
        index = state.catalogue.index_of_id(emag_id)
        return None if index is None or self._is_removed(state, index) else index

    def _live_slice(self, state: _Account, offset: int, limit: int) -> list[int]:
        """Live indices ``offset .. offset+limit`` in O(limit + log removed), like offset paging."""
        removed = state.removed
        # the offset-th live index is the least x with x - (removed indices <= x) == offset
        index = offset
        while True:
            candidate = offset + bisect.bisect_right(removed, index)
            if candidate == index:
                break
            index = candidate
        result: list[int] = []
        position = bisect.bisect_left(removed, index)
        while len(result) < limit and index < state.catalogue.size:
            if position < len(removed) and removed[position] == index:
                position += 1
            else:
                result.append(index)
            index += 1
        return result

    def _matching(self, state: _Account, filters: dict[str, object]) -> list[int]:
        """Indices of live records matching the filters: key filters are O(1); the others scan the
        offer fields of the whole catalogue once (about 20 us a record) and are cached until a change."""
        account = state.catalogue.account
        if any(key in filters for key in _KEY_FILTERS):
            if "id" in filters:
                index = state.catalogue.index_of_id(int(str(filters["id"])))
            elif "part_number" in filters:
                index = self._index_of_sku(state, str(filters["part_number"]))
            else:
                index = state.catalogue.index_of_pnk(str(filters["part_number_key"]))
            if index is None or self._is_removed(state, index):
                return []
            return [index] if _matches(self._served(account, index, by_product=False), filters) else []
        key = tuple(sorted(filters.items()))
        cached = state.scan_cache.get(key)
        if cached is None:
            removed = set(state.removed)
            cached = [
                index
                for index in range(state.catalogue.size)
                if index not in removed and _matches(self._offer_now(state, index), filters)
            ]
            state.scan_cache[key] = cached
        return cached

    def _offer_now(self, state: _Account, index: int) -> dict[str, Any]:
        """The offer fields with saved changes; malformed records never differ in these fields."""
        offer = state.catalogue.offer_fields(index)
        offer.update(state.overrides.get(index, {}))
        return offer

    def _current(self, state: _Account, index: int) -> dict[str, Any]:
        record = state.catalogue.record(index)
        changes = state.overrides.get(index)
        if changes:
            record.update(copy.deepcopy(changes))
        return record

    def _served(self, account: str, index: int, *, by_product: bool) -> dict[str, Any]:
        """The record as a read returns it: generated, changed by saves, maybe malformed or hostile."""
        state = self._state(account)
        record = self._current(state, index)
        rate = self.faults[state.name].malformed_rate
        key = state.catalogue.position
        if rate > 0 and _unit(self.seed, key, index) < rate:
            kind = MALFORMED_KINDS[int(_unit(self.seed, key, index, 1) * len(MALFORMED_KINDS))]
            if kind == "missing_part_number":
                del record["part_number"]
            elif kind == "bad_sale_price":
                record["sale_price"] = "12,5a"
            else:
                del record["id"]
        hostile = self.faults[state.name].hostile_records
        if hostile and (hostile_kind := kind_at(index, state.catalogue.size, hostile)) is not None:
            make_hostile(record, hostile_kind)
        if by_product:
            # GPSR fields are completion flags in list reads but details when filtered to one product
            contact = {
                "name": f"{record['brand']} Europe SRL",
                "address": "Bucuresti",
                "email": "gpsr@example.com",
            }
            for field_name in ("manufacturer", "eu_representative"):
                record[field_name] = [dict(contact)] if record[field_name] else []
        return record

    def _validate_entity(
        self, state: _Account, entity: object, position: int, required: tuple[str, ...]
    ) -> tuple[int, dict[str, Any]]:
        """The record index and the field changes of one save entity; RequestRefused names the id."""
        if not isinstance(entity, dict):
            raise RequestRefused([f"Entity {position}: must be an object, got {type(entity).__name__}"])
        raw_id = entity.get("id")
        emag_id = _as_int(raw_id)
        if emag_id is None or not 1 <= emag_id <= MAX_OFFER_ID:
            raise RequestRefused(
                [f"Entity {position}: id must be an integer between 1 and {MAX_OFFER_ID}, got {raw_id!r}"]
            )
        name = f"Offer id {emag_id}"
        index = self._live_index_of_id(state, emag_id)
        if index is None:
            raise RequestRefused(
                [f"{name}: no such offer in this account (saves only update existing offers)"]
            )
        errors = [
            f"{name}: {key} is required when updating an offer" for key in required if key not in entity
        ]
        current = self._current(state, index)
        changes: dict[str, Any] = {}
        prices: dict[str, int | None] = {}
        for key in PRICE_FIELDS:
            if key in entity:
                try:
                    prices[key] = _price(entity[key], allow_null=key == "recommended_price")
                except ValueError as exc:
                    errors.append(f"{name}: {key} {exc}")
        low = prices.get("min_sale_price") or _units(current["min_sale_price"])
        high = prices.get("max_sale_price") or _units(current["max_sale_price"])
        sale = prices.get("sale_price") or _units(current["sale_price"])
        touched = {"sale_price", "min_sale_price", "max_sale_price"} & set(prices)
        if touched and not errors:
            if low >= high:
                errors.append(
                    f"{name}: max_sale_price {format_price(high)} must be greater than "
                    f"min_sale_price {format_price(low)}"
                )
            elif not low <= sale <= high:
                errors.append(
                    f"{name}: sale_price {format_price(sale)} is outside "
                    f"[min_sale_price {format_price(low)}, max_sale_price {format_price(high)}]"
                )
        recommended = prices.get("recommended_price")
        if recommended is not None and recommended <= sale:
            errors.append(
                f"{name}: recommended_price {format_price(recommended)} must be greater than "
                f"sale_price {format_price(sale)}"
            )
        fbe = state.catalogue.kind == "fbe"
        errors.extend(_offer_field_errors(name, entity, changes, current, fbe=fbe))
        if errors:
            raise RequestRefused(errors)
        for key, value in prices.items():
            changes[key] = None if value is None else format_price(value)
        return index, changes


def _offer_field_errors(
    name: str, entity: Mapping[str, Any], changes: dict[str, Any], current: Mapping[str, Any], *, fbe: bool
) -> list[str]:
    """Check status, vat_id, stock and handling_time; fill ``changes`` with what is valid."""
    errors: list[str] = []
    if "status" in entity:
        status = _as_int(entity["status"])
        if status not in OFFER_STATUSES:
            errors.append(f"{name}: status must be 0, 1 or 2, got {entity['status']!r}")
        changes["status"] = status
    if "vat_id" in entity:
        vat_id = _as_int(entity["vat_id"])
        if vat_id is None or vat_id < 1:
            errors.append(f"{name}: vat_id must be a positive integer, got {entity['vat_id']!r}")
        changes["vat_id"] = vat_id
    if "stock" in entity:
        stock = _warehouse_values(entity["stock"], MAX_STOCK)
        if fbe:
            errors.append(
                f"{name}: the stock of a Fulfilled by eMAG offer is managed by eMAG, not the seller"
            )
        elif stock is None:
            errors.append(
                f"{name}: stock must be a list of {{warehouse_id, value}} with an integer value "
                f"0..{MAX_STOCK}, got {entity['stock']!r}"
            )
        else:
            # Each warehouse sent is set; the offer's other warehouses keep theirs (an entry read without
            # warehouse_id is warehouse 1). general_stock is their sum, estimated_stock keeps the reserved.
            held = {_as_int(item.get("warehouse_id", 1)) or 1: item for item in current["stock"]}
            held.update({item["warehouse_id"]: item for item in stock})
            merged = [{"warehouse_id": w, "value": int(item["value"])} for w, item in held.items()]
            general = sum(item["value"] for item in merged)
            reserved = max(0, int(current["general_stock"]) - int(current["estimated_stock"]))
            changes.update(stock=merged, general_stock=general, estimated_stock=max(0, general - reserved))
    if "handling_time" in entity:
        handling = _warehouse_values(entity["handling_time"], MAX_HANDLING_DAYS)
        if handling is None:
            errors.append(
                f"{name}: handling_time must be a list of {{warehouse_id, value 0..{MAX_HANDLING_DAYS}}}"
            )
        changes["handling_time"] = handling
    return errors


def _warehouse_values(value: object, maximum: int) -> list[dict[str, int]] | None:
    if not isinstance(value, list) or not value:
        return None
    result = []
    for item in value:
        if not isinstance(item, dict):
            return None
        warehouse = _as_int(item.get("warehouse_id", 1))
        amount = _as_int(item.get("value"))
        if warehouse is None or warehouse < 1 or amount is None or not 0 <= amount <= maximum:
            return None
        result.append({"warehouse_id": warehouse, "value": amount})
    return result


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _units(value: str) -> int:
    return int(Decimal(value) * PRICE_SCALE)


def _price(value: object, *, allow_null: bool = False) -> int | None:
    """A sent price to 1/10,000 units; ValueError says what is wrong with it."""
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a decimal number, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"must be a decimal number, got {value!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_DECIMALS:
        raise ValueError(f"has more than {PRICE_DECIMALS} decimals: {value!r}")
    return int(amount * PRICE_SCALE)


def _mapping(data: object) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise RequestRefused([f"data must be an object for reads, got {type(data).__name__}"])
    return data


def _paging(params: Mapping[str, Any]) -> tuple[int, int]:
    page = _as_int(params.get("currentPage", 1))
    per_page = _as_int(params.get("itemsPerPage", DEFAULT_ITEMS_PER_PAGE))
    if page is None or page < 1:
        raise RequestRefused([f"currentPage must be an integer >= 1, got {params.get('currentPage')!r}"])
    if per_page is None or per_page < 1:
        raise RequestRefused([f"itemsPerPage must be an integer >= 1, got {params.get('itemsPerPage')!r}"])
    if per_page > MAX_ITEMS_PER_PAGE:
        raise RequestRefused([f"itemsPerPage must be at most {MAX_ITEMS_PER_PAGE}, got {per_page}"])
    return page, per_page


def _filters(params: Mapping[str, Any]) -> dict[str, object]:
    """The supported filters that were sent; unknown keys are ignored like eMAG does."""
    filters: dict[str, object] = {}
    for key in _INT_FILTERS:
        if params.get(key) is not None:
            value = _as_int(params[key])
            if value is None:
                raise RequestRefused([f"Filter {key} must be an integer, got {params[key]!r}"])
            filters[key] = value
    for key in _STR_FILTERS:
        if params.get(key) is not None:
            filters[key] = str(params[key])
    return filters


def _matches(record: Mapping[str, Any], filters: Mapping[str, object]) -> bool:
    for key, wanted in filters.items():
        if key in ("general_stock", "estimated_stock"):
            # eMAG: "a value between 0 and the input"
            if not 0 <= int(record[key]) <= int(str(wanted)):
                return False
        elif key == "offer_validation_status":
            if record[key]["value"] != wanted:
                return False
        elif key in ("validation_status", "translation_validation_status"):
            if record[key][0]["value"] != wanted:
                return False
        elif record.get(key) != wanted:
            return False
    return True
