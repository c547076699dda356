"""Splitting a large image into overlapping tiles, one microtask each. Pure, no Django."""

from __future__ import annotations

import math

Region = tuple[int, int, int, int]  # COCO [x, y, width, height] in image pixels


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    count = math.ceil((length - overlap) / step)
    # Spread the tiles evenly so the last one ends exactly at the edge and every seam gets at
    # least `overlap` pixels (usually more), instead of a thin sliver tile at the end.
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_regions(width: int, height: int, tile: int, overlap: int) -> list[Region]:
    """Regions covering a ``width`` x ``height`` image with tiles of at most ``tile`` pixels a
    side, neighbours overlapping by at least ``overlap`` pixels; one region if it fits."""
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    if tile <= 0 or (width <= tile and height <= tile):
        return [(0, 0, width, height)]
    if not 0 <= overlap < tile:
        raise ValueError("overlap must be at least 0 and less than the tile size")
    return [
        (x, y, min(tile, width), min(tile, height))
        for y in _starts(height, tile, overlap)
        for x in _starts(width, tile, overlap)
    ]
