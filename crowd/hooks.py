"""Where one app asks another built on top of it, without an import circle: one registry style.

Dependencies point one way (``tasks`` builds on ``crowd``; ``qa`` and ``payouts`` on ``tasks``).
When an app needs an answer or a field that a later app owns, it declares a :class:`Hook`
with an honest default (nobody has earned anything, no score is known, nobody listens), and
the owning app registers its function by name in its ``AppConfig.ready``; registering a name
again replaces it, so ``ready()`` running twice is harmless. The caller picks how it uses
the registered functions:

- :meth:`Hook.ask`: one answer (the last registered, else the default), e.g. a worker's score;
- :meth:`Hook.gather`: every registered function's answer, e.g. a worker's snapshot frames;
- :meth:`Hook.notify`: tell every registered function, e.g. a gold answer failed;
- :class:`Contributions`: fields of one response, merged over the default's.

``crowd.contracts`` holds the hooks between ``qa`` and ``payouts``; ``tasks.hooks`` those that
``tasks`` itself calls (and its routing policy); ``crowd.profile`` the fields of ``GET /me/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Hook(Generic[P, R]):
    def __init__(self, default: Callable[P, R]) -> None:
        self._default = default
        self._registered: dict[str, Callable[P, R]] = {}

    def register(self, name: str, function: Callable[P, R]) -> None:
        """Register, or replace, by name."""
        self._registered[name] = function

    def ask(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The answer of the last function registered, or of the default."""
        function = next(reversed(self._registered.values()), self._default)
        return function(*args, **kwargs)

    def gather(self, *args: P.args, **kwargs: P.kwargs) -> list[R]:
        """Every registered function's answer, in the order they were registered."""
        return [function(*args, **kwargs) for function in self._registered.values()]

    def notify(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every registered function (nothing happens while none is)."""
        for function in self._registered.values():
            function(*args, **kwargs)


Contributor = Callable[[T], dict[str, Any]]


class Contributions(Hook[[T], dict[str, Any]]):
    """Fields that one app's response shows but other apps own: ``GET /me/`` shows a balance
    that ``payouts`` owns and a score that ``qa`` owns this way."""

    def collect(self, subject: T) -> dict[str, Any]:
        fields = self._default(subject)
        for part in self.gather(subject):
            fields.update(part)
        return fields
