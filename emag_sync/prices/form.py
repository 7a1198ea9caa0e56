"""The price and stock flows' parameters as types: the Prefect UI builds its form from them (the account's name,
text with a pattern for prices, optional fields that render as empty text). Their help texts are the
flows' docstrings (``Args:``), which is where Prefect reads them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

from emag_sync.limits import MAX_STOCK
from emag_sync.prices.rules import PRICE_TEXT_PATTERN
from emag_sync.schema import ACCOUNT_NAME_PATTERN


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _blank_is_none(value: Any) -> Any:
    """An emptied form field arrives as "" (or spaces): the same as not given."""
    return None if isinstance(value, str) and not value.strip() else value


Sku = Annotated[str, Field(min_length=1)]
# A registered account's name ("FBE" from `prefect deployment run --params` is "fbe"); one that is not
# registered fails the run at once, naming the registered ones.
AccountName = Annotated[
    str, BeforeValidator(_lower), Field(pattern=ACCOUNT_NAME_PATTERN, examples=["fbe", "bg-main"])
]
PriceText = Annotated[str, Field(pattern=PRICE_TEXT_PATTERN, examples=["99.90"])]
# Shown as a plain optional text field: the schema of ``str | None`` is a choice between a text and a
# "None" type, which the UI renders as "Property is type 'None'".
OptionalPriceText = Annotated[
    PriceText | None,
    BeforeValidator(_blank_is_none),
    WithJsonSchema({"type": "string", "pattern": PRICE_TEXT_PATTERN}),
]
CsvText = Annotated[str, Field(min_length=1)]
# Stock per warehouse, a whole number as eMAG takes it; the warehouse optional (1, or the offer's only one).
StockNumber = Annotated[int, Field(ge=0, le=MAX_STOCK, examples=[12])]
OptionalWarehouseId = Annotated[
    int | None,
    BeforeValidator(_blank_is_none),
    WithJsonSchema({"type": "integer", "minimum": 1}),
]
