"""Money as integer minor units plus an ISO 4217 code; decimal strings only at the API edge.

Pure helpers, no Django: every amount the product stores is an ``int`` of minor units
(cents for USD, yen for JPY), so sums are exact and no float ever touches money.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Currencies whose minor unit is not 1/100 of the major unit (ISO 4217); others use 2.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}
_CODE = re.compile(r"^[A-Z]{3}$")
# The largest amount a person may type, in minor units (ten billion dollars in cents): far
# beyond any reward, budget or bonus, and far enough inside a 64-bit column that sums and
# products of such amounts in SQL do not overflow it.
MAX_MINOR = 10**12


class MoneyError(ValueError):
    """An amount or currency a person typed that cannot be stored exactly."""


def normalize_currency(code: str) -> str:
    upper = code.strip().upper() if isinstance(code, str) else ""
    if not _CODE.match(upper):
        raise MoneyError(f"{code!r} is not a three-letter ISO 4217 currency code.")
    return upper


def exponent(currency: str) -> int:
    return _EXPONENTS.get(normalize_currency(currency), 2)


def parse_amount(text: str, currency: str) -> int:
    """``"0.05"`` USD -> 5. Rejects floats' artefacts: more decimals than the currency has."""
    if not isinstance(text, str | int) or isinstance(text, bool):
        raise MoneyError('Give the amount as a decimal string, e.g. "0.05".')
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise MoneyError(f"{text!r} is not a decimal amount.") from None
    if not value.is_finite():
        raise MoneyError(f"{text!r} is not a finite amount.")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"{text!r} has more decimal places than {normalize_currency(currency)} allows "
            f"({exponent(currency)})."
        )
    if abs(scaled) > MAX_MINOR:
        raise MoneyError(
            f"{text!r} is more than the largest amount taken, "
            f"{format_amount(MAX_MINOR, currency)} {normalize_currency(currency)}."
        )
    return int(scaled)


def format_amount(minor: int, currency: str) -> str:
    """5 USD -> ``"0.05"``; -1234 USD -> ``"-12.34"``; 500 JPY -> ``"500"``."""
    places = exponent(currency)
    value = Decimal(minor).scaleb(-places)
    return f"{value:.{places}f}"


def money_json(minor: int, currency: str) -> dict[str, str]:
    """The API's money shape: ``{"amount": "12.34", "currency": "USD"}``."""
    return {"amount": format_amount(minor, currency), "currency": normalize_currency(currency)}
