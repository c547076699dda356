"""Consensus: merge several workers' answers to one task into one decision, per annotation kind.

Each module handles one kind of annotation (``classification``, ``boxes``, ``polygons``,
``keypoints``) with pure functions over numpy arrays: no Django, no database, so the
merge is tested directly and benchmarked against its peers.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector while bulk-creating small objects that make no
    reference cycles (tuples per box, dicts per parsed line): with it on, each allocation
    threshold triggers a collection over everything created so far. Process-wide: code in
    another thread meanwhile is only slower or faster, never wrong."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
