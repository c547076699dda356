from __future__ import annotations

import pytest

from crowd.money import MoneyError, format_amount, money_json, parse_amount


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("0.05", "USD", 5), ("12", "usd", 1200), ("500", "JPY", 500), ("1.234", "KWD", 1234),
     ("0", "EUR", 0), (" 3.10 ", "EUR", 310)],
)  # fmt: skip
def test_parse_amount_is_exact(text: str, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor
    assert isinstance(parse_amount(text, currency), int)


@pytest.mark.parametrize(
    ("text", "currency"),
    [("0.001", "USD"), ("1.5", "JPY"), ("abc", "USD"), ("NaN", "USD"), ("Infinity", "USD"),
     ("1", "US"), ("1", "usd1"), (True, "USD"), (0.1, "USD"), ("1e+308", "USD"),
     (10**30, "USD"), ("-10000000001", "USD"), ("1000000000001", "JPY")],
)  # fmt: skip
def test_parse_amount_rejects_what_cannot_be_stored_exactly(text: object, currency: str) -> None:
    with pytest.raises(MoneyError):
        parse_amount(text, currency)  # type: ignore[arg-type]


def test_the_largest_amount_is_taken() -> None:
    assert parse_amount("10000000000", "USD") == 10**12
    assert parse_amount("-10000000000.00", "USD") == -(10**12)
    assert parse_amount("1000000000000", "JPY") == 10**12


def test_format_amount() -> None:
    assert format_amount(5, "USD") == "0.05"
    assert format_amount(-1234, "USD") == "-12.34"
    assert format_amount(500, "JPY") == "500"
    assert money_json(1234, "kwd") == {"amount": "1.234", "currency": "KWD"}
