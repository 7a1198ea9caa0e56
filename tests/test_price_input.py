"""What an operator hands the price updates: CSV lines, files saved by Excel, the guard against typos, the
Prefect form. No database, sandbox or Prefect server: these are unit tests."""

from __future__ import annotations

import codecs
import html
import re
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.cli import app
from emag_sync.cli.prices import CLI_FIXES
from emag_sync.errors import PriceFix, PriceUpdateError
from emag_sync.prices import csv_input, rules
from emag_sync.prices.results import failure_line, result_rows
from tests.price_helpers import make_request, parse_price_csv

FBE, MAIN = legacy_account(AccountType.FBE), legacy_account(AccountType.MAIN)
LIMIT = Decimal("0.30")


def problems_of(text: str) -> dict[int, str]:
    return {p.line: p.message for p in parse_price_csv(text).problems}


# ---------------------------------------------------------------------------------------------- CSV lines


def test_an_unclosed_quote_is_reported_on_its_own_line_and_swallows_nothing():
    text = (
        "sku,account,price\n"  # 1
        "EMG1,fbe,10\n"
        "EMG2,fbe,11\n"
        "EMG3,fbe,12\n"
        "EMG4,fbe,13\n"
        "EMG5,fbe,14\n"
        'EMG6,"fbe,15\n'  # 7: the quote is never closed
        "EMG7,fbe,16\n"
        "EMG8,fbe,17\n"
        "EMG9,fbe,18\n"  # 10
    )
    parsed = parse_price_csv(text)
    assert [r.line for r in parsed.requests] == [2, 3, 4, 5, 6, 8, 9, 10]
    assert [(p.line, p.message) for p in parsed.problems] == [
        (7, 'a quote (") is opened and not closed on this line')
    ]


def test_optional_columns_may_be_empty_or_absent_on_any_row():
    text = (
        "sku,account,price,min_price,max_price\n"
        "EMG1,fbe,10\n"  # both absent
        "EMG2,fbe,10,,\n"  # both empty
        "EMG3,fbe,10,5\n"  # max absent
        "EMG4,fbe,10,,20\n"  # min empty
        "EMG5,fbe\n"  # price is required
        "EMG6,fbe,10,5,20,99\n"  # one cell too many
    )
    parsed = parse_price_csv(text)
    got = {r.sku: (r.min_price, r.max_price) for r in parsed.requests}
    assert got == {
        "EMG1": (None, None),
        "EMG2": (None, None),
        "EMG3": (Decimal("5"), None),
        "EMG4": (None, Decimal("20")),
    }
    problems = {p.line: p.message for p in parsed.problems}
    assert problems[6].startswith("missing price (the row has 2 of the columns")
    assert problems[7].startswith("6 cells, but the header has 5 columns")


def test_problems_name_their_line_once_and_no_bad_row_hides_another():
    text = (
        "sku,account,price,min_price,max_price\n"
        "EMG1,fbe,10.5,,\n"  # 2: fine
        "EMG2,fbe\n"  # 3: missing price
        "EMG3,fbe,1O.5,,\n"  # 4: bad number
        "EMG4,amazon,10,,\n"  # 5: unknown account
        "EMG5,fbe,10,,\n"  # 6: duplicate with 8
        "\n"  # 7: blank, skipped
        "EMG5,FBE,11,,\n"  # 8
        "EMG5,main,12,,\n"  # 9: same SKU, other account: fine
        "EMG6,fbe,10.12345,,\n"  # 10: too many decimals
        "EMG6,fbe,x,,\n"  # 11: bad, and a repeat of 10: both said
    )
    parsed = parse_price_csv(text)
    assert [(r.sku, r.account, r.line) for r in parsed.requests] == [("EMG1", FBE, 2), ("EMG5", MAIN, 9)]
    problems = problems_of(text)
    assert sorted(problems) == [3, 4, 5, 6, 8, 10, 11]
    assert problems[4] == "price '1O.5' is not a number"
    assert problems[5] == "account 'amazon' is not registered (registered: fbe, main)"
    assert problems[6] == "listed on lines 6, 8; keep one line per SKU and account" == problems[8]
    assert (
        problems[10]
        == "price 10.12345 has more than 4 decimals (eMAG's maximum); also listed on lines 10, 11"
    )
    assert problems[11] == "price 'x' is not a number; also listed on lines 10, 11"
    assert not any(message.startswith("line") for message in problems.values())

    rows = result_rows([], parse_price_csv(text).problems)
    lines = [failure_line(row) for row in rows]
    assert lines[1] == "line 4: EMG3 on eMAG FBE: invalid: price '1O.5' is not a number"
    assert lines[2] == "line 5: EMG4: invalid: account 'amazon' is not registered (registered: fbe, main)"
    assert all(line.count("line ") == 1 for line in lines if "listed on" not in line)


@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"])
def test_line_numbers_hold_for_every_kind_of_line_break(newline):
    text = newline.join(["sku,account,price", "EMG1,fbe,10", "EMG2,fbe,x", "", "EMG3,fbe,12", ""])
    parsed = parse_price_csv(text)
    assert [r.line for r in parsed.requests] == [2, 5]
    assert [p.line for p in parsed.problems] == [3]


def test_csv_header_must_name_the_required_columns():
    parsed = parse_price_csv("sku,price,colour,price\nEMG1,10,red,1\n")
    assert not parsed.requests
    [problem] = parsed.problems
    assert problem.line == 1
    assert "missing column(s) account" in problem.message and "unknown column(s) colour" in problem.message
    assert "column(s) price appear twice" in problem.message
    assert parse_price_csv("\n\n").problems[0].message.startswith("the file is empty")


# ---------------------------------------------------------------------------------------------- encodings

CSV_TEXT = "sku,account,price\nEMG-ȘȚ-ăîâ,fbe,10\n"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("utf-8", CSV_TEXT.encode("utf-8")),
        ("utf-8 with BOM", codecs.BOM_UTF8 + CSV_TEXT.encode("utf-8")),
        ("utf-16 LE with BOM", CSV_TEXT.encode("utf-16")),  # Excel's "Unicode text"
        ("utf-16 BE with BOM", codecs.BOM_UTF16_BE + CSV_TEXT.encode("utf-16-be")),
    ],
)
def test_utf8_and_utf16_with_bom_are_read_without_being_told(tmp_path, name, data):
    path = tmp_path / "prices.csv"
    path.write_bytes(data)
    text = csv_input.read_price_file(path)
    [request] = parse_price_csv(text).requests
    assert request.sku == "EMG-ȘȚ-ăîâ"


def test_a_cp1250_file_is_a_one_line_error_naming_file_offset_and_option_then_reads_with_it(tmp_path):
    path = tmp_path / "excel.csv"
    data = "sku,account,price\nEMG-Ş,fbe,10\n".encode("cp1250")
    path.write_bytes(data)
    offset = data.index("Ş".encode("cp1250"))  # cp1250 has the cedilla form

    with pytest.raises(PriceUpdateError) as caught:
        csv_input.read_price_file(path)
    message = str(caught.value)
    assert message == (
        f"{path}: byte {offset} (0x{data[offset]:02x}) is not valid utf-8; give the file's encoding with "
        "--encoding (Excel on Romanian Windows: --encoding cp1250)"
    )

    [request] = parse_price_csv(csv_input.read_price_file(path, "cp1250")).requests
    assert request.sku == "EMG-Ş"


def test_wrong_or_unknown_encodings_are_one_line_errors(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_bytes("sku,account,price\nEMG-Ş,fbe,10\n".encode("cp1250"))
    with pytest.raises(PriceUpdateError, match=r"byte 22 \(0xaa\) is not valid utf-8; is that the file's"):
        csv_input.read_price_file(path, "utf-8")
    with pytest.raises(PriceUpdateError, match="--encoding latin-9000: unknown encoding"):
        csv_input.read_price_file(path, "latin-9000")
    path.write_bytes("sku,account,price\n".encode("utf-16-le"))  # no byte-order mark
    with pytest.raises(PriceUpdateError, match=r"byte 1 is a NUL byte: .* UTF-16 without a byte-order mark"):
        csv_input.read_price_file(path)


def test_the_cli_says_so_in_one_line_without_a_traceback(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("sku,account,price\nEMG-Ş,fbe,10\n".encode("cp1250"))
    runner = CliRunner()

    result = runner.invoke(app, ["update-price", "--file", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert "--encoding cp1250" in result.stderr and str(path) in result.stderr

    unknown = runner.invoke(app, ["update-price", "--file", str(path), "--encoding", "nope"])
    assert (
        unknown.exit_code == 1
        and unknown.stderr == "emag-sync: --encoding nope: unknown encoding (e.g. utf-8, cp1250, utf-16)\n"
    )


# ---------------------------------------------------------------------------------------------- the guard


def _stored(**changes) -> rules.StoredOffer:
    values = dict(
        row_id=1, sku="EMG470", account=FBE, emag_offer_id=200001408, sale_price=Decimal("223.1100"),
        min_sale_price=Decimal("100"), max_sale_price=Decimal("411.16"), recommended_price=None,
        currency="RON", vat_id=1, status=1, is_active=True,
    )  # fmt: skip
    return rules.StoredOffer(**(values | changes))


def test_a_change_beyond_the_limit_is_refused_unless_allowed_and_the_fix_speaks_each_interface():
    cut = make_request("EMG470", "fbe", "133.87")  # 40% below 223.11
    with pytest.raises(PriceUpdateError) as caught:
        rules.plan_update(cut, _stored(), max_change=LIMIT)
    error = caught.value
    assert error.fix is PriceFix.ALLOW_LARGE_CHANGE
    assert str(error) == (
        "EMG470 on eMAG FBE: price 133.87 is 40% below the current 223.1100 RON, more than the 30% "
        "EMAG_MAX_PRICE_CHANGE allows; set allow_large_change to true if the change is intended"
    )
    assert error.worded(CLI_FIXES).endswith("; pass --allow-large-change if the change is intended")
    assert "allow_large_change" not in error.worded(CLI_FIXES)

    allowed = make_request("EMG470", "fbe", "133.87", allow_large_change=True)
    assert rules.plan_update(allowed, _stored(), max_change=LIMIT).large_change is True
    raised = make_request("EMG470", "fbe", "312.35")  # 40% above
    with pytest.raises(PriceUpdateError, match="40% above the current"):
        rules.plan_update(raised, _stored(), max_change=LIMIT)


def test_the_limit_is_a_share_of_the_current_price_and_needs_one():
    exactly = make_request("EMG470", "fbe", "156.177")  # 30% below: not more than the limit
    assert rules.plan_update(exactly, _stored(), max_change=LIMIT).large_change is False
    wider = make_request("EMG470", "fbe", "133.87")
    assert rules.plan_update(wider, _stored(), max_change=Decimal("0.5")).large_change is False
    assert rules.plan_update(wider, _stored(sale_price=None), max_change=LIMIT).large_change is False


def test_every_fix_is_worded_for_the_cli_and_for_the_form():
    from emag_sync.errors import PARAMETER_FIXES

    assert set(CLI_FIXES) == set(PARAMETER_FIXES) == set(PriceFix)
    for fix in PriceFix:
        assert "--" in CLI_FIXES[fix] and "--" not in PARAMETER_FIXES[fix]
    no_min = make_request("EMG470", "fbe", "200")
    with pytest.raises(PriceUpdateError) as caught:
        rules.plan_update(no_min, _stored(min_sale_price=None), max_change=LIMIT)
    assert str(caught.value).endswith("the offer has no stored min_sale_price; give one in min_price")
    assert caught.value.worded(CLI_FIXES).endswith("; give one with --min-price")


# ---------------------------------------------------------------------------------------------- the form


def test_the_price_flows_offer_a_typed_form_with_help():
    from prefect.utilities.callables import parameter_schema, parameter_schema_from_entrypoint

    from flows.update_price import emag_update_offer_price, emag_update_offer_prices_bulk

    schema = parameter_schema(emag_update_offer_price.fn).model_dump()
    props = schema["properties"]
    assert list(props) == ["sku", "account", "price", "min_price", "max_price", "allow_large_change"]
    assert schema["required"] == ["sku", "account", "price"]
    assert all(p.get("description") for p in props.values()), "every field has its help text"
    assert props["account"]["type"] == "string" and props["account"]["examples"] == ["fbe", "bg-main"]
    for name in ("price", "min_price", "max_price"):
        assert props[name]["type"] == "string" and props[name]["pattern"] == rules.PRICE_TEXT_PATTERN
        assert "anyOf" not in props[name]  # an optional price is plain text, not a text-or-"None" choice
    assert props["allow_large_change"] == props["allow_large_change"] | {"type": "boolean", "default": False}
    # `prefect deploy` builds the schema from the source file: the same form
    assert (
        parameter_schema_from_entrypoint("flows/update_price.py:emag_update_offer_price").model_dump()
        == schema
    )

    bulk = parameter_schema(emag_update_offer_prices_bulk.fn).model_dump()
    assert list(bulk["properties"]) == ["csv_text", "allow_large_change"] and bulk["required"] == ["csv_text"]
    assert all(p.get("description") for p in bulk["properties"].values())


def test_the_form_takes_what_people_type_and_refuses_what_is_not_a_price():
    from prefect.exceptions import ParameterTypeError

    from flows.update_price import emag_update_offer_price

    given = emag_update_offer_price.validate_parameters(
        {"sku": "EMG469", "account": "FBE", "price": "99.90", "min_price": "", "max_price": "120"}
    )
    assert (given["account"], given["min_price"], given["max_price"]) == ("fbe", None, "120")
    for bad in ({"price": "99,90"}, {"price": "1.23456"}, {"price": 99.9}, {"account": "not a name!"}):
        with pytest.raises(ParameterTypeError):
            emag_update_offer_price.validate_parameters(
                {"sku": "EMG469", "account": "fbe", "price": "1"} | bad
            )


# ---------------------------------------------------------------------------------------------- the artifact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("KIT[/2]", r"KIT\[/2\]"),
        ("<img src=x onerror=alert(1)>", r"\<img src=x onerror=alert(1)\>"),
        (
            "[link](http://example.invalid) www.example.invalid",
            r"\[link\](http:\/\/example.invalid) www\.example.invalid",
        ),
        ("**bold** `code` a|b ~x~ &amp;", r"\*\*bold\*\* \`code\` a\|b \~x\~ \&amp;"),
        ("# heading", r"\# heading"),
        ("- item", r"\- item"),
        ("1. item", r"1\. item"),
        ("line\nbreak", "line break"),
        ("99.9000", "99.9000"),  # prices and plain messages stay as they are
        ("eMAG refused: Offer 1: locked", "eMAG refused: Offer 1: locked"),
    ],
)
def test_artifact_cells_are_text_for_the_prefect_ui_markdown(text, shown):
    """The Prefect UI renders a table artifact's cells as markdown: operator and eMAG text is escaped (the
    one markdown_text of emag_sync.escaping), and reads as the text it is."""
    from tasks.prices import markdown_text
    from tests.helpers import rendered_markdown

    rendered = rendered_markdown(markdown_text(text))
    assert rendered.startswith("<p>") and "<" not in rendered[3:-5], rendered
    assert html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip() == " ".join(text.splitlines())
    assert " ".join(text.splitlines()).replace("\\", "") == shown.replace("\\", "")
    from emag_sync.escaping import markdown_plain

    assert markdown_plain(markdown_text(text)) == " ".join(text.splitlines())  # read back as it was


# ---------------------------------------------------------------------------------------------- one number form

NOT_PRICES = [
    "3_2.99",
    "\u0663\u0662.\u0669\u0669",
    "\uff13\uff12.\uff19\uff19",
    "1e2",
    "32,99",
    ".5",
    "32.",
    "+32.99",
]


@pytest.mark.parametrize("typed", NOT_PRICES)
def test_the_cli_the_csv_and_the_form_refuse_the_same_number_forms(typed):
    """`--price 3_2.99`, Arabic-Indic and full-width digits parsed as 32.99 on the command line and in a CSV
    while the form refused them: one rule now, ASCII digits and one point, one line naming field and value."""
    from prefect.exceptions import ParameterTypeError

    from flows.update_price import emag_update_offer_price

    line = f"price {typed!r} is not a number"
    cli = CliRunner().invoke(app, ["update-price", "--sku", "EMG1", "--account", "fbe", "--price", typed])
    assert cli.exit_code == 1 and cli.stderr == f"emag-sync: EMG1 on eMAG FBE: {line}\n"
    assert problems_of(f'sku,account,price\nEMG1,fbe,"{typed}"\n') == {2: line}
    with pytest.raises(ParameterTypeError):
        emag_update_offer_price.validate_parameters({"sku": "EMG1", "account": "fbe", "price": typed})


@pytest.mark.parametrize("typed", ["32.99", "32", "0.0001", "35.000000", "007.50", *NOT_PRICES, "1.23456"])
def test_the_form_pattern_and_the_parser_are_one_rule(typed):
    import re

    try:
        rules.parse_price(typed, field_name="price", where="EMG1")
        parsed = True
    except PriceUpdateError:
        parsed = False
    assert parsed == bool(re.fullmatch(rules.PRICE_TEXT_PATTERN, typed))
