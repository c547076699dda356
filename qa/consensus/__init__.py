"""Consensus: merge several workers' answers to one task into one decision, per annotation kind.

Each module handles one kind of annotation (``classification``, ``boxes``, ``polygons``,
``keypoints``) with pure functions over numpy arrays: no Django, no database, so the
merge is tested directly and benchmarked against its peers.
"""

from __future__ import annotations

from crowd.collector import collector_paused

__all__ = ["collector_paused"]
