"""JSON documents read piece by piece: an import's readers ask for a top-level value or walk a
top-level array one element at a time, whether the document was parsed already (a request's
JSON body) or is a file on disk (an upload, parsed as it is walked, never whole).

A large file is the reason: a 100 MB predictions file parsed at once is about 0.6 GB of
Python objects before its first item is checked. Walked, only the element in hand (and what
its reader keeps) is in memory. A file is walked with ijson's C parser (yajl2), once per
question asked of it, from the start: asking for a top-level value or for the first keys
stops as soon as it is answered.

A file that is not JSON raises :class:`NotJson` at the point where the parser finds out,
which may be after some elements were handed over: callers read inside the transaction that
stores what they read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from typing import IO, Any

import ijson

MISSING: Any = object()


class NotJson(ValueError):
    """The file is not (well-formed) JSON."""


class JsonSource(ABC):
    """A JSON document, parsed (:class:`Parsed`) or on disk (:class:`Streamed`)."""

    @abstractmethod
    def shape(self) -> str:
        """``object``, ``array`` or ``other`` (the top-level value's kind)."""

    @abstractmethod
    def first_key(self, wanted: Collection[str]) -> str | None:
        """The first of the top-level object's keys that is in ``wanted`` (None: none is)."""

    @abstractmethod
    def value(self, key: str) -> Any:
        """The top-level object's value at ``key``, whole; :data:`MISSING` when absent."""

    @abstractmethod
    def is_array(self, key: str | None) -> bool:
        """Whether the value at ``key`` (None: the top-level value) is an array."""

    @abstractmethod
    def elements(self, key: str | None) -> Iterator[Any]:
        """Each element of the array at ``key`` (None: the top-level array), one at a time;
        nothing when it is not an array (ask :meth:`is_array` first)."""

    def first_element(self, key: str | None = None) -> Any:
        """The array's first element, :data:`MISSING` when it is empty or not an array."""
        return next(self.elements(key), MISSING)


class Parsed(JsonSource):
    """A document parsed already."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def shape(self) -> str:
        if isinstance(self.data, dict):
            return "object"
        return "array" if isinstance(self.data, list) else "other"

    def first_key(self, wanted: Collection[str]) -> str | None:
        if not isinstance(self.data, dict):
            return None
        return next((key for key in self.data if key in wanted), None)

    def value(self, key: str) -> Any:
        return self.data.get(key, MISSING) if isinstance(self.data, dict) else MISSING

    def _at(self, key: str | None) -> Any:
        return self.data if key is None else self.value(key)

    def is_array(self, key: str | None) -> bool:
        return isinstance(self._at(key), list)

    def elements(self, key: str | None) -> Iterator[Any]:
        found = self._at(key)
        return iter(found) if isinstance(found, list) else iter(())


class Streamed(JsonSource):
    """A JSON file on disk (any seekable binary file), walked from the start for each
    question. Numbers come as ``int`` and ``float`` (never ``Decimal``)."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file

    def _start(self) -> IO[bytes]:
        self.file.seek(0)
        return self.file

    def _events(self) -> Iterator[tuple[str, str, Any]]:
        try:
            yield from ijson.parse(self._start(), use_float=True)
        except ijson.JSONError as exc:
            raise NotJson(str(exc)) from None

    def shape(self) -> str:
        for _, event, _ in self._events():
            return {"start_map": "object", "start_array": "array"}.get(event, "other")
        raise NotJson("The file is empty.")

    def first_key(self, wanted: Collection[str]) -> str | None:
        for prefix, event, value in self._events():
            if prefix != "":
                continue  # inside a value
            if event == "map_key" and value in wanted:
                return str(value)
            if event not in ("start_map", "map_key"):
                return None  # the object ended, or the document is no object
        return None

    def value(self, key: str) -> Any:
        if "." in key or not key:
            raise ValueError("a top-level key without dots")
        try:
            return next(ijson.items(self._start(), key, use_float=True), MISSING)
        except ijson.JSONError as exc:
            raise NotJson(str(exc)) from None

    def is_array(self, key: str | None) -> bool:
        events = self._events()
        if key is None:
            first = next(events, None)
            return first is not None and first[1] == "start_array"
        for prefix, event, value in events:
            if prefix != "":
                continue
            if event == "map_key" and value == key:
                following = next(events, None)  # the value's first event
                return following is not None and following[1] == "start_array"
            if event not in ("start_map", "map_key"):
                return False
        return False

    def elements(self, key: str | None) -> Iterator[Any]:
        path = "item" if key is None else f"{key}.item"
        try:
            yield from ijson.items(self._start(), path, use_float=True)
        except ijson.JSONError as exc:
            raise NotJson(str(exc)) from None
