"""Request parsers: DRF's JSON parser, refusing bodies nested too deeply to decode."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """A body nested beyond the interpreter's recursion limit (``[[[[...`` a hundred thousand
    deep fits in a few hundred kilobytes) is a 400 like any other malformed JSON, not a
    ``RecursionError`` escaping as a server error."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None
