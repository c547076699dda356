"""Serializer fields that take JSON values as they are sent.

DRF's own fields coerce: ``"5"`` passes as an integer, ``5`` as a string, ``"yes"`` as true.
The API refuses a value of the wrong JSON type instead, so a client's mistake is named rather
than guessed at; these fields are DRF's with that one difference (and ids within the 64-bit
range a database column holds).
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

ID_MIN, ID_MAX = -(2**63), 2**63 - 1


def messages(message: str, *keys: str) -> dict[str, Any]:
    """``error_messages`` that say one thing, whatever of ``keys`` went wrong (``message`` is
    used as is: no ``{placeholders}``)."""
    return dict.fromkeys(keys, message.replace("{", "{{").replace("}", "}}"))


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not a string of digits, a float or a boolean."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", ID_MIN)
        kwargs.setdefault("max_value", ID_MAX)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return data


class StrictFloatField(serializers.FloatField):
    """A JSON number (integer or not): not a string or a boolean."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false``: not ``"yes"``, ``1`` or ``"on"``."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    """A JSON string: not a number."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class IdListField(serializers.ListField):
    """A list of 1 to ``max_length`` integer ids. Any fault is the one message ``invalid``,
    which says what the list must be."""

    def __init__(self, *, max_length: int, message: str, **kwargs: Any) -> None:
        keys = ("required", "null", "invalid", "not_a_list", "empty", "min_length", "max_length")
        super().__init__(
            child=StrictIntegerField(), allow_empty=False, min_length=1, max_length=max_length,
            error_messages=messages(message, *keys), **kwargs,
        )  # fmt: skip

    def to_internal_value(self, data: Any) -> list[int]:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError:
            self.fail("invalid")


class QueryIdField(serializers.IntegerField):
    """An id in a query string: ASCII digits only (no sign, spaces or decimal point)."""

    DIGITS = re.compile(r"[0-9]{1,18}")

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str) or not self.DIGITS.fullmatch(data):
            self.fail("invalid")
        return int(data)
