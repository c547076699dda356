"""Generated scenes with exact truth. Pure (Pillow and numpy; no Django).

A scene is a background (a gradient, noise, or stripes of random colours) with shapes of four
classes drawn on it in order, later shapes over earlier ones. Shapes vary in size and
rotation, some overlap a little, some are cut by the image's border. Because the simulator
drew them, it knows every annotation exactly:

- ``polygon``: the shape's outline, clipped to the image (circles as a 24-gon);
- ``bbox``: the bounds of that polygon, COCO ``[x, y, w, h]``;
- ``mask``: the pixels of each shape left visible by the shapes drawn over it, as COCO RLE
  of the full image (so a scene's masks never overlap: the truth of a semantic project too);
- ``keypoints``: a fixed list per class, in a fixed order (``KEYPOINTS``): a circle's top,
  right, bottom and left; a square's 4 and a triangle's 3 corners and a star's 5 tips, each
  clockwise from the topmost. Visible 2, covered by a later shape 1, outside the image 0;
- ``classification``: the class of the scene's one dominant shape (classification scenes have
  one large shape and a few small ones of other classes).

Coordinates are pixels of the image, origin top-left, pixel ``(i, j)`` covering
``[i, i+1) x [j, j+1)``, as in the API. Class colours have a channel below 50 or above 210 and
backgrounds never do, so a pixel of a class colour belongs to a shape of that class.
Everything is deterministic from the seed.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from qa.regions import clip_polygon, polygon_area

CLASSES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "circle": (232, 28, 64),
    "square": (24, 176, 72),
    "triangle": (36, 96, 236),
    "star": (250, 196, 8),
}
KEYPOINTS: dict[str, list[str]] = {
    "circle": ["top", "right", "bottom", "left"],
    "square": ["corner_1", "corner_2", "corner_3", "corner_4"],
    "triangle": ["corner_1", "corner_2", "corner_3"],
    "star": ["tip_1", "tip_2", "tip_3", "tip_4", "tip_5"],
}
KINDS = ("classification", "bbox", "polygon", "keypoints", "mask")
BACKGROUNDS = ("gradient", "noise", "stripes")
CIRCLE_SIDES = 24
STAR_INNER = 0.45
# Backgrounds stay within these channel values; every class colour leaves them.
BACKGROUND_RANGE = (60, 200)
MAX_OVERLAP = 0.2  # of the smaller shape's box, for shapes drawn over one another
MIN_INSIDE = 0.4  # of a shape's area that must lie inside the image

Point = list[float]


def labels_json() -> list[dict[str, Any]]:
    """The project labels that match the scenes: names, colours and keypoint names."""
    return [
        {
            "name": name,
            "color": "#{:02x}{:02x}{:02x}".format(*COLOURS[name]),
            "keypoints": KEYPOINTS[name],
        }
        for name in CLASSES
    ]


@dataclass(frozen=True)
class Shape:
    label: str
    centre: tuple[float, float]
    radius: float
    outline: list[Point]  # the whole outline, before clipping to the image
    polygon: list[Point]  # clipped to the image
    bbox: list[float]
    keypoints: list[list[float]]  # [x, y, v] in KEYPOINTS order

    def item(self, kind: str) -> dict[str, Any]:
        if kind == "bbox":
            return {"label": self.label, "bbox": list(self.bbox)}
        if kind == "polygon":
            return {"label": self.label, "points": [list(p) for p in self.polygon]}
        if kind == "keypoints":
            return {"label": self.label, "keypoints": [list(k) for k in self.keypoints]}
        raise ValueError(f"no shape item for kind {kind!r}")


@dataclass(frozen=True)
class Scene:
    name: str
    width: int
    height: int
    seed: str
    background: str
    shapes: tuple[Shape, ...]
    label: str  # the class of the largest shape (the dominant one in classification scenes)

    def truth(self, kind: str) -> list[dict[str, Any]]:
        """The exact annotations of the scene for a project of ``kind``, as API items."""
        if kind == "classification":
            return [{"label": self.label}]
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        if kind == "mask":
            return self._masks()
        return [shape.item(kind) for shape in self.shapes]

    def _masks(self) -> list[dict[str, Any]]:
        from qa.consensus.polygons import _decode, _encode
        from qa.geometry import polygons_to_rles

        shapes = [s for s in self.shapes if len(s.polygon) >= 3]
        if not shapes:
            return []
        rles = polygons_to_rles([s.polygon for s in shapes], self.width, self.height)
        masks = _decode(rles)  # (height, width, n), in drawing order
        covered = np.zeros((self.height, self.width), dtype=bool)
        out: list[dict[str, Any]] = []
        for k in reversed(range(len(shapes))):  # later shapes lie on top
            visible = (masks[:, :, k] > 0) & ~covered
            covered |= visible
            if visible.any():
                out.append({"label": shapes[k].label, "rle": _encode(visible.astype(np.uint8))})
        return out[::-1]


# --- Geometry -----------------------------------------------------------------------------------


def _round(value: float) -> float:
    return round(float(value), 2)


def _regular(centre: tuple[float, float], radius: float, sides: int, angle: float) -> list[Point]:
    """Vertices at equal angles, clockwise on screen (y grows downwards)."""
    cx, cy = centre
    return [
        [cx + radius * math.cos(angle + 2 * math.pi * k / sides),
         cy + radius * math.sin(angle + 2 * math.pi * k / sides)]
        for k in range(sides)
    ]  # fmt: skip


def _from_topmost(points: list[Point]) -> list[Point]:
    """The same clockwise cycle, starting at the topmost point (leftmost among equals)."""
    first = min(range(len(points)), key=lambda i: (round(points[i][1], 6), points[i][0]))
    return points[first:] + points[:first]


def _outline(
    label: str, centre: tuple[float, float], radius: float, rng: random.Random
) -> tuple[list[Point], list[Point]]:
    """(outline, keypoints) of a shape, unclipped, keypoints without visibility."""
    cx, cy = centre
    if label == "circle":
        outline = _regular(centre, radius, CIRCLE_SIDES, 0.0)
        keypoints = [[cx, cy - radius], [cx + radius, cy], [cx, cy + radius], [cx - radius, cy]]
        return outline, keypoints
    angle = rng.uniform(0, 2 * math.pi)
    if label == "square":
        outline = _regular(centre, radius, 4, angle)
        return outline, _from_topmost(outline)
    if label == "triangle":
        bend = rng.uniform(-0.3, 0.3)
        angles = [angle, angle + 2 * math.pi / 3 + bend, angle + 4 * math.pi / 3 - bend]
        outline = [[cx + radius * math.cos(a), cy + radius * math.sin(a)] for a in angles]
        return outline, _from_topmost(outline)
    if label == "star":
        tips = _regular(centre, radius, 5, angle)
        inner = _regular(centre, radius * STAR_INNER, 5, angle + math.pi / 5)
        outline = [p for pair in zip(tips, inner, strict=True) for p in pair]
        return outline, _from_topmost(tips)
    raise ValueError(f"unknown class {label!r}")


def point_in_polygon(x: float, y: float, polygon: Sequence[Sequence[float]]) -> bool:
    """Even-odd rule."""
    inside = False
    for i, (x1, y1) in enumerate(polygon):
        x0, y0 = polygon[i - 1]
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def bounds(points: Sequence[Sequence[float]]) -> list[float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _box_overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection of two boxes over the smaller one's area."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / max(1e-9, min(a[2] * a[3], b[2] * b[3]))


# --- Scenes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Draft:
    label: str
    centre: tuple[float, float]
    radius: float
    outline: list[Point]
    keypoints: list[Point]


def _place(
    rng: random.Random,
    width: int,
    height: int,
    radius: float,
    *,
    border: bool,
    region: tuple[float, float, float, float] | None = None,
) -> tuple[float, float]:
    if region is not None:
        x0, y0, x1, y1 = region
        return rng.uniform(x0, x1), rng.uniform(y0, y1)
    if border:
        # Centre within one radius of an edge, inside the image: the border cuts the shape.
        edge = rng.randrange(4)
        along_x, along_y = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        depth = rng.uniform(0.2, 0.9) * radius
        return [
            (depth, along_y), (width - depth, along_y), (along_x, depth), (along_x, height - depth)
        ][edge]  # fmt: skip
    return rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)


def _fits(draft: _Draft, placed: list[_Draft], width: int, height: int) -> bool:
    clipped = clip_polygon(draft.outline, [0, 0, width, height])
    whole = polygon_area(draft.outline)
    if len(clipped) < 3 or polygon_area(clipped) < MIN_INSIDE * whole:
        return False
    box = bounds(draft.outline)
    return all(_box_overlap(box, bounds(other.outline)) <= MAX_OVERLAP for other in placed)


def _finish(drafts: list[_Draft], width: int, height: int) -> tuple[Shape, ...]:
    """Clip to the image and work out keypoint visibility (later shapes cover earlier ones)."""
    shapes = []
    for index, draft in enumerate(drafts):
        clipped = clip_polygon(draft.outline, [0, 0, width, height])
        polygon = [[_round(x), _round(y)] for x, y in clipped]
        keypoints = []
        for x, y in draft.keypoints:
            if not (0 <= x <= width and 0 <= y <= height):
                keypoints.append([0.0, 0.0, 0])  # outside the image: absent, as COCO has it
                continue
            covered = any(point_in_polygon(x, y, later.outline) for later in drafts[index + 1 :])
            keypoints.append([_round(x), _round(y), 1 if covered else 2])
        box = bounds(polygon)
        shapes.append(
            Shape(
                label=draft.label, centre=draft.centre, radius=draft.radius,
                outline=[[_round(x), _round(y)] for x, y in draft.outline], polygon=polygon,
                bbox=[_round(v) for v in box], keypoints=keypoints,
            )
        )  # fmt: skip
    return tuple(shapes)


def _draft(rng: random.Random, label: str, centre: tuple[float, float], radius: float) -> _Draft:
    outline, keypoints = _outline(label, centre, radius, rng)
    return _Draft(label, centre, radius, outline, keypoints)


def scene_make(
    seed: str | int,
    *,
    kind: str = "bbox",
    width: int = 480,
    height: int = 360,
    name: str = "",
    classes: Sequence[str] = CLASSES,
) -> Scene:
    """One scene, the same for the same arguments."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    rng = random.Random(f"scene:{seed}:{kind}:{width}x{height}")
    side = min(width, height)
    placed: list[_Draft] = []
    if kind == "classification":
        label = rng.choice(list(classes))
        radius = rng.uniform(0.26, 0.36) * side
        centre = (rng.uniform(0.4, 0.6) * width, rng.uniform(0.4, 0.6) * height)
        placed.append(_draft(rng, label, centre, radius))
        others = [c for c in classes if c != label] or [label]
        wanted = rng.randint(0, 3)
        for _ in range(60):
            if len(placed) > wanted:
                break
            small = rng.uniform(0.05, 0.09) * side
            draft = _draft(
                rng, rng.choice(others), _place(rng, width, height, small, border=False), small
            )
            if _fits(draft, placed, width, height):
                placed.append(draft)
    else:
        wanted = rng.randint(2, 6)
        for _ in range(200):
            if len(placed) >= wanted:
                break
            radius = rng.uniform(0.07, 0.2) * side
            centre = _place(rng, width, height, radius, border=rng.random() < 0.25)
            draft = _draft(rng, rng.choice(list(classes)), centre, radius)
            if _fits(draft, placed, width, height):
                placed.append(draft)
        label = max(placed, key=lambda d: d.radius).label
    return Scene(
        name=name or f"scene-{seed}",
        width=width,
        height=height,
        seed=str(seed),
        background=rng.choice(BACKGROUNDS),
        shapes=_finish(placed, width, height),
        label=label,
    )


# --- Drawing ------------------------------------------------------------------------------------


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A background colour: every channel within BACKGROUND_RANGE, kept off its edges."""
    low, high = BACKGROUND_RANGE
    return rng.integers(low + 15, high - 15, size=3).astype(np.float64)


def _background(scene: Scene) -> Image.Image:
    key = f"background:{scene.seed}:{scene.width}x{scene.height}".encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
    h, w = scene.height, scene.width
    if scene.background == "gradient":
        start, end = _muted(rng), _muted(rng)
        t = (
            np.linspace(0, 1, w)[None, :, None]
            if rng.random() < 0.5
            else (np.linspace(0, 1, h)[:, None, None])
        )
        pixels = np.broadcast_to(start + (end - start) * t, (h, w, 3))
    elif scene.background == "noise":
        pixels = _muted(rng) + rng.normal(0, 12, size=(h, w, 3))
    else:
        stripe = int(rng.integers(8, 40))
        colours = [_muted(rng) for _ in range(int(rng.integers(2, 6)))]
        index = (np.arange(w) // stripe) % len(colours)
        if rng.random() < 0.5:
            pixels = np.broadcast_to(np.array(colours)[index][None, :, :], (h, w, 3))
        else:
            index = (np.arange(h) // stripe) % len(colours)
            pixels = np.broadcast_to(np.array(colours)[index][:, None, :], (h, w, 3))
    low, high = BACKGROUND_RANGE
    return Image.fromarray(np.clip(np.rint(pixels), low, high).astype(np.uint8), "RGB")


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image: shapes filled flat in their class colour, no antialiasing."""
    image = _background(scene)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        colour = COLOURS[shape.label]
        if shape.label == "circle":
            (cx, cy), r = shape.centre, shape.radius
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon([(x, y) for x, y in shape.outline], fill=colour)
    return image


def encode(scene: Scene, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image = render(scene)
    if fmt.upper() in ("JPEG", "JPG"):
        image.save(out, "JPEG", quality=92)
    else:
        image.save(out, "PNG")
    return out.getvalue()


@dataclass(frozen=True)
class SceneFile:
    name: str
    data: bytes
    scene: Scene


def scenes_make(
    count: int, *, seed: int, kind: str, width: int = 480, height: int = 360
) -> list[Scene]:
    """``count`` scenes named ``<kind>-<seed>-<nnnn>``; the same seed gives the same scenes."""
    return [
        scene_make(
            f"{seed}:{index}", kind=kind, width=width, height=height,
            name=f"{kind}-{seed}-{index:04d}",
        )
        for index in range(count)
    ]  # fmt: skip


def scenes_write(
    count: int, *, seed: int, kind: str, fmt: str = "PNG", width: int = 480, height: int = 360
) -> list[SceneFile]:
    """``count`` scenes encoded as PNG (or JPEG), with file names and their scenes."""
    suffix = ".jpg" if fmt.upper() in ("JPEG", "JPG") else ".png"
    return [
        SceneFile(scene.name + suffix, encode(scene, fmt), scene)
        for scene in scenes_make(count, seed=seed, kind=kind, width=width, height=height)
    ]
