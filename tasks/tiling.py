"""Splitting a large image into overlapping tiles, one microtask each, and cutting a polygon to
a tile. Pure, no Django."""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def tile_cores(regions: list[Region]) -> list[Region]:
    """The part of each tile that is its own: every pixel of the image belongs to the core of
    the tile whose centre is nearest along each axis, so neighbouring tiles split their
    overlap down its middle and the cores cover the tiles' union once. What is merged on each
    tile is kept on its core when the tiles' results are put together, so no pixel is decided
    twice."""

    def bounds(spans: set[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, int]]:
        ordered = sorted(spans)
        out = {}
        for k, (start, size) in enumerate(ordered):
            low = start if k == 0 else _midpoint(ordered[k - 1], (start, size))
            high = (
                start + size if k == len(ordered) - 1 else _midpoint((start, size), ordered[k + 1])
            )
            out[(start, size)] = (low, high)
        return out

    columns = bounds({(x, w) for x, _, w, _ in regions})
    rows = bounds({(y, h) for _, y, _, h in regions})
    cores = []
    for x, y, w, h in regions:
        (left, right), (top, bottom) = columns[(x, w)], rows[(y, h)]
        cores.append((left, top, right - left, bottom - top))
    return cores


def _midpoint(before: tuple[int, int], after: tuple[int, int]) -> int:
    """Where the centres of two neighbouring spans ``(start, size)`` meet, in whole pixels."""
    return (2 * before[0] + before[1] + 2 * after[0] + after[1]) // 4


# --- Polygons and a region's rectangle ---------------------------------------------------------


def clip_polygon(points: Sequence[Sequence[float]], region: Sequence[float]) -> list[list[float]]:
    """Sutherland-Hodgman clipping of a polygon to the region's rectangle (as the workspace's
    ``clipPolygon`` in annotator.js)."""
    rx, ry, rw, rh = region
    edges = (
        (lambda p: p[0] >= rx, lambda a, b: _at_x(a, b, rx)),
        (lambda p: p[0] <= rx + rw, lambda a, b: _at_x(a, b, rx + rw)),
        (lambda p: p[1] >= ry, lambda a, b: _at_y(a, b, ry)),
        (lambda p: p[1] <= ry + rh, lambda a, b: _at_y(a, b, ry + rh)),
    )
    out = [[float(p[0]), float(p[1])] for p in points]
    for inside, cross in edges:
        if not out:
            break
        src, out = out, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
    return out


def _at_x(a: Sequence[float], b: Sequence[float], x: float) -> list[float]:
    t = (x - a[0]) / (b[0] - a[0])
    return [x, a[1] + t * (b[1] - a[1])]


def _at_y(a: Sequence[float], b: Sequence[float], y: float) -> list[float]:
    t = (y - a[1]) / (b[1] - a[1])
    return [a[0] + t * (b[0] - a[0]), y]


def polygon_area(points: Sequence[Sequence[float]]) -> float:
    total = 0.0
    for i, (x1, y1) in enumerate(points):
        x0, y0 = points[i - 1]
        total += x0 * y1 - x1 * y0
    return abs(total) / 2
