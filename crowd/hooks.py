"""Fields that one app's response shows but another app owns, without an import circle.

The app that shows the response declares a :class:`Contributions` with honest defaults; the
app that owns the data registers a contributor in its ``AppConfig.ready``. ``GET /me/`` shows a
balance that ``payouts`` owns and a score that ``qa`` owns this way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Contributor = Callable[[T], dict[str, Any]]


class Contributions(Generic[T]):
    def __init__(self, defaults: Contributor[T]) -> None:
        self._defaults = defaults
        self._contributors: dict[str, Contributor[T]] = {}

    def register(self, name: str, contributor: Contributor[T]) -> None:
        """Register or replace by name, so ``ready()`` running twice is harmless."""
        self._contributors[name] = contributor

    def collect(self, subject: T) -> dict[str, Any]:
        fields = self._defaults(subject)
        for contributor in self._contributors.values():
            fields.update(contributor(subject))
        return fields
