"""Consensus: merge several workers' answers to one task into one decision, per annotation kind.

Each module handles one kind of annotation (``classification`` here; boxes, polygons and
keypoints beside it) with pure functions over numpy arrays: no Django, no database, so the
merge is tested directly and benchmarked against its peers.
"""
