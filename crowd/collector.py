"""The cyclic garbage collector held while a process builds many small objects at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while bulk-creating small objects that make no
    reference cycles (tuples per box, dicts per parsed line or imported item): with it on,
    each allocation threshold triggers a collection over everything created so far.
    Process-wide: code in another thread meanwhile is only slower or faster, never wrong."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
