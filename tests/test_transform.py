"""Transform: every observed quirk normalised, malformed records rejected by name, no float anywhere."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.schema import PAGE, READ_AT, offers, products, sync_rejects
from tasks.transform import transform_batch

PAYLOADS = Path(__file__).parent / "payloads"
SYNCED_AT = datetime(2025, 3, 1, 9, 4, 42, tzinfo=UTC)
MONEY = ["price", "sale_price", "recommended_price", "min_sale_price", "max_sale_price"]


def payload(name: str):
    return json.loads((PAYLOADS / name).read_text())


def by_sku(frame, sku: str) -> dict:
    rows = frame[frame["sku"] == sku].to_dict("records")
    assert len(rows) == 1, f"{sku}: {len(rows)} rows"
    return rows[0]


def test_frames_have_exactly_the_schema_columns() -> None:
    frames = transform_batch(
        [payload("record_fbe_emg469.json")], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT
    )
    not_from_emag = {"id", "product_id", "created_at", "updated_at", "sync_attempts", "prices_pushed_at",
                     "stock_pushed_at"}  # fmt: skip
    assert list(frames.products.columns) == [
        *(c.name for c in products.columns if c.name not in not_from_emag),
        PAGE,
    ]
    assert list(frames.offers.columns) == [
        *(c.name for c in offers.columns if c.name not in not_from_emag),
        READ_AT,
    ]
    assert (frames.offers[READ_AT] == SYNCED_AT).all()  # read at the sync's time unless told otherwise
    assert set(frames.rejects.columns) == {c.name for c in sync_rejects.columns} - {
        "id",
        "run_id",
        "created_at",
    }


def test_emg469_record_normalised() -> None:
    record = payload("record_fbe_emg469.json")
    frames = transform_batch([record], legacy_account(AccountType.FBE), pages=7, synced_at=SYNCED_AT)
    offer = by_sku(frames.offers, "EMG469")
    assert offer["emag_offer_id"] == 200001407
    assert offer["price"] == offer["sale_price"] == Decimal("121.8400")
    assert str(offer["sale_price"]) == "121.8400"
    assert offer["recommended_price"] is None
    assert (offer["stock"], offer["available_stock"], offer["reserved_stock"]) == (139, 136, 3)
    assert offer["visibility"] == "visible"
    assert offer["offer_validation_status"] == 1 and offer["offer_validation_status_description"] == "Valid"
    assert offer["handling_time"] == 0 and offer["account_type"] == "fbe"
    product = by_sku(frames.products, "EMG469")
    assert product["emag_id"] == 200001407 and product[PAGE] == 7
    assert product["validation_status"] == 9 and product["translation_validation_status"] == 9
    assert product["validation_status_description"] == "Approved documentation"
    assert product["family_id"] is None and product["family_name"] is None
    assert product["gpsr_manufacturer"] is True and product["gpsr_eu_representative"] is False
    assert json.loads(product["raw_emag_data"]) == record
    assert json.loads(product["images"]) == record["images"]
    assert product["last_synced_at"] == SYNCED_AT and product["is_active"] is True


def test_quirks_normalised() -> None:
    frames = transform_batch(
        payload("quirks.json"), legacy_account(AccountType.MAIN), pages=[1, 1, 2], synced_at=SYNCED_AT
    )
    assert frames.rejects.empty, frames.rejects["reason"].tolist()

    ints = by_sku(frames.offers, "Q-INTS")
    assert ints["emag_offer_id"] == 300000001  # id sent as a digit string
    assert ints["sale_price"] == Decimal("49.9000")  # a JSON number, read exactly (not 49.89999...)
    assert ints["max_sale_price"] == Decimal("100.0000") and ints["min_sale_price"] == Decimal("40.0000")
    assert ints["stock"] == 7  # no general_stock: the stock list (no warehouse_id) is summed
    assert ints["available_stock"] is None and ints["reserved_stock"] is None
    assert ints["handling_time"] == 2 and ints["status"] == 1
    assert ints["offer_validation_status"] == 1 and ints["visibility"] == "visible"
    product = by_sku(frames.products, "Q-INTS")
    assert product["validation_status"] == 3 and product["ownership"] == 1  # ownership: true → 1
    assert product["gpsr_manufacturer"] is True and product["gpsr_eu_representative"] is False
    assert (product["family_id"], product["family_name"]) == (295, "Test family")
    assert product["url"] is None
    assert product["ean"] == ["5941234567890", "40012345", "7622210449283"]

    neg = by_sku(frames.offers, "Q-NEG")
    assert neg["reserved_stock"] == 0  # estimated above general: never negative
    assert neg["sale_price"] == Decimal("10.1235")  # quantised to four places
    assert neg["handling_time"] == 5  # the first warehouse's value
    assert neg["offer_validation_status"] == 2 and neg["visibility"] == "hidden"
    product = by_sku(frames.products, "Q-NEG")
    assert product["name"] == "Bad\\u0000name"  # a backslash, then "u0000": text, not a NUL
    assert product["ownership"] == 2 and product["ean"] is None
    assert json.loads(product["raw_emag_data"])["name"] == "Bad\\u0000name"

    zero = by_sku(frames.offers, "Q-ZERO")
    assert zero["visibility"] == "hidden" and zero["reserved_stock"] == 0


def test_no_float_anywhere() -> None:
    records = [payload("record_fbe_emg469.json"), *payload("quirks.json")]
    frames = transform_batch(records, legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT)
    for frame in (frames.products, frames.offers, frames.rejects):
        for column in frame.columns:
            assert frame[column].dtype == object, column
            assert not any(isinstance(v, float) for v in frame[column]), column
    for column in MONEY:
        assert all(v is None or isinstance(v, Decimal) for v in frames.offers[column]), column
        assert all(v is None or v.as_tuple().exponent == -4 for v in frames.offers[column]), column
    assert all(isinstance(v, int) for v in frames.offers["stock"])


@pytest.mark.parametrize("index", range(len(payload("malformed.json"))))
def test_each_malformed_record_is_rejected_by_name_and_the_rest_loads(index: int) -> None:
    bad = payload("malformed.json")[index]
    good = payload("record_fbe_emg469.json")
    frames = transform_batch([good, bad], legacy_account(AccountType.FBE), pages=[3, 4], synced_at=SYNCED_AT)
    assert frames.products["sku"].tolist() == ["EMG469"] and len(frames.offers) == 1
    assert len(frames.rejects) == 1
    reject = frames.rejects.iloc[0].to_dict()
    expected = bad["_expect"] if isinstance(bad, dict) else "record is not an object"
    assert expected in reject["reason"]
    assert reject["page"] == 4 and reject["account_type"] == "fbe"
    assert json.loads(reject["raw_payload"]) == bad
    if isinstance(bad, dict):
        assert reject["sku"] == bad.get("part_number")
        assert reject["emag_id"] == (None if bad.get("id") is None else str(bad["id"]))


def test_sku_repeated_with_another_id_rejects_the_later_one() -> None:
    first = payload("record_fbe_emg469.json")
    second = copy.deepcopy(first) | {"id": 200009999}
    other = copy.deepcopy(first) | {"id": 200000001, "part_number": "EMG001"}
    frames = transform_batch(
        [first, other, second], legacy_account(AccountType.FBE), pages=[1, 1, 2], synced_at=SYNCED_AT
    )
    assert sorted(frames.offers["sku"]) == ["EMG001", "EMG469"]
    assert by_sku(frames.offers, "EMG469")["emag_offer_id"] == 200001407
    reject = frames.rejects.iloc[0].to_dict()
    assert len(frames.rejects) == 1 and reject["emag_id"] == "200009999" and reject["page"] == 2
    assert (
        "part_number 'EMG469' repeated with another id" in reject["reason"]
        and "200001407" in reject["reason"]
    )


def test_exact_duplicates_keep_the_last_version_and_are_not_rejects() -> None:
    first = payload("record_fbe_emg469.json")
    later = copy.deepcopy(first) | {"sale_price": "130.0000"}
    frames = transform_batch(
        [first, later], legacy_account(AccountType.FBE), pages=[1, 2], synced_at=SYNCED_AT
    )
    assert frames.rejects.empty and frames.duplicates == 1 and frames.records == 2
    offer = by_sku(frames.offers, "EMG469")
    assert offer["sale_price"] == Decimal("130.0000")
    assert by_sku(frames.products, "EMG469")[PAGE] == 2


def test_content_hash_is_stable_and_follows_changes() -> None:
    record = payload("record_fbe_emg469.json")
    once = transform_batch([record], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT)
    again = transform_batch(
        [copy.deepcopy(record)], legacy_account(AccountType.FBE), pages=9, synced_at=datetime.now(UTC)
    )  # another page and time: same content
    assert once.products["content_hash"].tolist() == again.products["content_hash"].tolist()
    assert once.offers["content_hash"].tolist() == again.offers["content_hash"].tolist()
    changed = transform_batch(
        [record | {"sale_price": "121.8500"}], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT
    )
    assert changed.offers["content_hash"][0] != once.offers["content_hash"][0]
    described = transform_batch(
        [record | {"description": "new text"}], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT
    )  # only in raw_emag_data: the product changes, the offer does not
    assert described.products["content_hash"][0] != once.products["content_hash"][0]
    assert described.offers["content_hash"][0] == once.offers["content_hash"][0]


def test_empty_batch_and_pages_helper() -> None:
    empty = transform_batch([], legacy_account(AccountType.MAIN), synced_at=SYNCED_AT)
    assert empty.products.empty and empty.offers.empty and empty.rejects.empty
    assert "sku" in empty.products.columns

    record = payload("record_fbe_emg469.json")
    frames = transform_batch(
        [record, "junk"], legacy_account(AccountType.FBE), pages=[5, 6], synced_at=SYNCED_AT
    )
    assert by_sku(frames.products, "EMG469")[PAGE] == 5 and frames.rejects["page"].tolist() == [6]


def test_naive_time_and_page_mismatch_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        transform_batch([], legacy_account(AccountType.MAIN), synced_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="pages has 2 entries for 1 records"):
        transform_batch([{}], legacy_account(AccountType.MAIN), pages=[1, 2], synced_at=SYNCED_AT)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("7", 7), (" 12 ", 12), ("-3", -3), ("--5", None), ("1.5", None), ("²", None), (2.0, 2), (2.5, None)],
)
def test_integers_sent_as_text_or_numbers(sent, stored) -> None:
    record = payload("record_fbe_emg469.json") | {"vat_id": sent}
    frames = transform_batch([record], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT)
    assert frames.offers["vat_id"][0] == stored


@pytest.mark.parametrize("value", ["1e30", 1e25, "9999999999.99999", "-1e40"])
def test_prices_too_large_for_the_money_column_are_rejects_not_crashes(value: object) -> None:
    """Quantizing 1e30 raises InvalidOperation; it must become a named reject, and the batch must load."""
    from emag_sync.records import RecordRejected, parse_money

    with pytest.raises(RecordRejected, match="sale_price out of range"):
        parse_money(value, "sale_price", required=True, positive=True)
    assert parse_money("9999999999.99994", "sale_price") == Decimal("9999999999.9999")


# --- records PostgreSQL or Python cannot store: named rejects, the rest of the batch loads ---------------


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _with(**fields) -> dict:
    return payload("record_fbe_emg469.json") | fields


def _characteristics(value: object) -> list:
    return [{"id": 6506, "value": "16 GB"}, {"id": 7802, "value": "1 TB"}, {"id": 7803, "value": value}]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_with(description="<p>a\x00b</p>"),
         "description contains a NUL character (\\u0000), which PostgreSQL cannot store"),
        (_with(characteristics=_characteristics("x\ud800y")),
         "characteristics[2].value contains a lone surrogate (\\ud800), which is not a Unicode character"),
        (_with(name="\udfff"), "name contains a lone surrogate (\\udfff)"),
        (_with(offer_details={"a\x00": 1}), "a key of offer_details contains a NUL character"),
        (_with(part_number="EMG\x00469"), "part_number contains a NUL character"),
        (_with(id=2**64 + 1), "id out of range (1..4294967295): 18446744073709551617"),
        (_with(id=str(2**70)), "id out of range (1..4294967295): '1180591620717411303424'"),
        (_with(part_number="P" * 1025), "part_number is 1025 bytes long; at most 1024 fit the catalogue's unique"),
        (_with(part_number="Ș" * 513), "part_number is 1026 bytes long"),  # two bytes each in UTF-8
        (_with(characteristics=_deep(255)), "characteristics is nested more than 255 levels deep"),
        (_with(description=_deep(900)), "description is nested more than 255 levels deep"),
    ],
)  # fmt: skip
def test_a_record_postgresql_cannot_store_is_a_named_reject_kept_losslessly(bad: dict, reason: str) -> None:
    good = payload("record_fbe_emg469.json") | {"id": 200000001, "part_number": "EMG001"}
    frames = transform_batch([good, bad], legacy_account(AccountType.FBE), pages=[1, 2], synced_at=SYNCED_AT)
    assert frames.products["sku"].tolist() == ["EMG001"] and len(frames.offers) == 1
    [reject] = frames.rejects.to_dict("records")
    assert reject["reason"].startswith(reason), reject["reason"]
    assert reject["page"] == 2
    stored = json.loads(reject["raw_payload"])  # what JSONB receives
    if isinstance(stored, str):  # JSONB cannot hold the record as an object: its JSON text, as a string
        stored = json.loads(stored)
    assert stored == bad
    for column in ("sku", "emag_id", "reason", "raw_payload"):  # every text column storable as it is
        value = reject[column]
        assert value is None or ("\x00" not in value and value.encode("utf-8")), column


def test_a_reject_names_the_record_by_storable_text() -> None:
    frames = transform_batch(
        [_with(part_number="A\x00\ud800")], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT
    )
    [reject] = frames.rejects.to_dict("records")
    assert reject["sku"] == "A\\u0000\\ud800" and reject["emag_id"] == "200001407"


def test_an_escaped_backslash_before_u0000_is_text_and_stored_exactly_as_sent() -> None:
    """JSON ``"C:\\\\u0000"`` is a backslash then "u0000", not a NUL: it loads, byte for byte."""
    sent = '{"description": "C:\\\\u0000 and \\\\\\u0000", "name": "\\\\\\\\u0000"}'
    record = payload("record_fbe_emg469.json") | json.loads(sent)
    assert record["description"] == "C:\\u0000 and \\\x00"  # the second one is a real NUL
    frames = transform_batch([record], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT)
    assert frames.rejects["reason"].tolist() == [
        "description contains a NUL character (\\u0000), which PostgreSQL cannot store"
    ]
    record["description"] = "C:\\u0000"
    frames = transform_batch([record], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT)
    assert frames.rejects.empty
    product = by_sku(frames.products, "EMG469")
    assert product["name"] == "\\\\u0000"
    assert json.loads(product["raw_emag_data"]) == record
    assert '"C:\\\\u0000"' in product["raw_emag_data"]  # the escape eMAG sent, not a NUL


def test_integers_beyond_64_bits_load_exactly_in_raw_json_and_as_null_in_informational_columns() -> None:
    huge = 2**70 + 1
    record = _with(
        warranty=huge, number_of_offers=huge, category_id=-huge, family={"id": huge, "name": "F"},
        images=[{"url": "u", "display_type": huge}],
    )  # fmt: skip
    frames = transform_batch([record], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT)
    assert frames.rejects.empty, frames.rejects["reason"].tolist()
    product = by_sku(frames.products, "EMG469")
    assert json.loads(product["raw_emag_data"]) == record  # JSONB keeps them as numeric, exactly
    assert json.loads(product["images"])[0]["display_type"] == huge
    assert (product["number_of_offers"], product["category_id"], product["family_id"]) == (None, None, None)
    assert product["family_name"] == "F"
    huge_text = _with(general_stock="9" * 5000)  # more digits than Python converts: NULL, not a crash
    assert (
        by_sku(
            transform_batch([huge_text], legacy_account(AccountType.FBE), synced_at=SYNCED_AT).offers,
            "EMG469",
        )["stock"]
        == 139
    )  # the stock list is summed instead


def test_a_record_the_page_parser_could_not_read_is_a_reject_with_its_text() -> None:
    from emag_sync.api.salvage import UnreadableRecord

    text = '{"id": 200000002, "part_number": "EMG002", "characteristics": ' + "[" * 5000 + "]" * 5000 + "}"
    unreadable = UnreadableRecord(text, "characteristics is nested 5000 levels deep", 200000002, "EMG002")
    frames = transform_batch(
        [payload("record_fbe_emg469.json"), unreadable],
        legacy_account(AccountType.FBE),
        pages=[1, 2],
        synced_at=SYNCED_AT,
    )
    assert frames.products["sku"].tolist() == ["EMG469"]
    [reject] = frames.rejects.to_dict("records")
    assert reject["reason"] == "characteristics is nested 5000 levels deep"
    assert (reject["emag_id"], reject["sku"], reject["page"]) == ("200000002", "EMG002", 2)
    assert json.loads(reject["raw_payload"]) == text  # eMAG's text, as a JSON string


def test_records_up_to_255_levels_deep_load() -> None:
    record = _with(characteristics=_deep(254))  # the record itself is the 255th level
    frames = transform_batch([record], legacy_account(AccountType.FBE), pages=1, synced_at=SYNCED_AT)
    assert frames.rejects.empty and json.loads(by_sku(frames.products, "EMG469")["raw_emag_data"]) == record
