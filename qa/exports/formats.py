"""Dataset writers: COCO, YOLO (Ultralytics), Pascal VOC, Cityscapes, CSV and raw answers.
Pure, no Django.

Each writer takes the images one at a time (an iterable of :class:`Record`, in a fixed
order) and writes to a seekable binary file, never holding the dataset: COCO writes its
``images`` array straight out and spools ``annotations`` to a temporary file that is appended
at the end; the zip layouts write one member per image as they go. Every byte depends only on
the records, the labels and the options: zip members carry a fixed timestamp and mode, JSON
keys keep one order, numbers one format. The same inputs give the same file, byte for byte.

Coordinates come in as the product stores them: pixels of the full upright image, origin at
the top-left corner, boxes ``[x, y, w, h]``, masks COCO compressed RLE of the full image.

Masks: COCO carries them as RLE ``segmentation`` (``iscrowd`` 0), YOLO as segments traced
from them (one line a region of the mask: YOLO has neither holes nor parts), Pascal VOC as
``SegmentationClass/<stem>.png`` (palette indices: 0 background, label ``i`` at ``i + 1``,
coloured as the label) and ``SegmentationObject/<stem>.png`` (0 background, the ``k``-th
object of ``Annotations/<stem>.xml`` at ``k``, VOC's colour map), Cityscapes as
``gtFine/<subset>/<city>/<stem>_gtFine_labelIds.png`` and ``..._instanceIds.png`` (see
:func:`write_cityscapes`). Where masks overlap, the pixel goes to the more confident object.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import IO, Any
from xml.sax.saxutils import escape

import numpy as np
import numpy.typing as npt
import orjson
from pycocotools import mask as coco_mask

ZIP_TIME = (1980, 1, 1, 0, 0, 0)
COPY_CHUNK = 1 << 20
SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class Label:
    name: str
    color: str = "#000000"
    keypoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Record:
    """One image of the dataset and its merged annotations (API items with ``score`` and
    ``num_votes``; classification: one item with the label, or none)."""

    id: int
    file_name: str  # unique within the export, safe as a path member
    width: int
    height: int
    annotations: Sequence[dict[str, Any]]
    confidence: float | None = None
    votes: int = 0
    method: str = ""
    # Labelled by the model alone (auto-accept), with no human answer: every format says so.
    machine_labelled: bool = False
    subset: str = ""  # train, val, test; "" without a split
    open: Callable[[], IO[bytes]] | None = None  # the image's bytes, when images are shipped


@dataclass
class Counts:
    """What a writer wrote: for the dataset card."""

    images: int = 0
    annotations: int = 0
    per_label: Counter[str] = field(default_factory=Counter)
    per_subset: Counter[str] = field(default_factory=Counter)
    empty_images: int = 0
    machine_labelled: int = 0

    def add(self, record: Record, items: Sequence[dict[str, Any]]) -> None:
        self.images += 1
        self.annotations += len(items)
        self.per_label.update(item["label"] for item in items)
        if record.subset:
            self.per_subset[record.subset] += 1
        if not items:
            self.empty_images += 1
        if record.machine_labelled:
            self.machine_labelled += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "annotations": self.annotations,
            "empty_images": self.empty_images,
            "machine_labelled": self.machine_labelled,
            "per_label": dict(sorted(self.per_label.items())),
            "per_subset": dict(sorted(self.per_subset.items())),
        }


# The file of the zipped formats that lists what the model labelled alone, one path a line.
MACHINE_LABELLED_LIST = "machine_labelled.txt"


def machine_labelled_list(paths: Sequence[str]) -> str:
    head = "# Files labelled by the model alone (auto-accept), without a human answer\n"
    return head + "".join(path + "\n" for path in paths)


# --- Shared helpers -----------------------------------------------------------------------------


def _num(value: float) -> float | int:
    """A coordinate as JSON writes it: integers without ``.0``, others to 1/100 pixel."""
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


def _norm(value: float) -> str:
    """A normalised coordinate for YOLO, clipped to [0, 1]."""
    return f"{min(max(value, 0.0), 1.0):.6f}"


def stem(file_name: str) -> str:
    return file_name.rsplit(".", 1)[0] if "." in file_name else file_name


def zip_info(name: str, *, compress: bool = True) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    info.create_system = 3
    return info


def zip_write(archive: zipfile.ZipFile, name: str, data: bytes | str) -> None:
    archive.writestr(zip_info(name), data.encode() if isinstance(data, str) else data)


def zip_copy(archive: zipfile.ZipFile, name: str, source: IO[bytes], *, compress: bool) -> None:
    with archive.open(zip_info(name, compress=compress), "w", force_zip64=True) as member:
        shutil.copyfileobj(source, member, COPY_CHUNK)


def _ship_image(archive: zipfile.ZipFile, name: str, record: Record) -> None:
    if record.open is None:
        return
    with record.open() as source:
        # Images are compressed already; deflating them again costs time and saves nothing.
        zip_copy(archive, name, source, compress=False)


def _bounds(points: Sequence[Sequence[float]]) -> list[float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _shown_keypoints(item: dict[str, Any]) -> list[Sequence[float]]:
    return [k for k in item["keypoints"] if k[2] > 0]


def item_box(item: dict[str, Any]) -> list[float] | None:
    """The box of any shape item, ``[x, y, w, h]``; None for classification, no points or an
    empty mask."""
    if "bbox" in item:
        return [float(v) for v in item["bbox"]]
    if "rle" in item and "points" not in item:
        rle = _rle_bytes(item["rle"])
        if not coco_mask.area(rle):
            return None
        return [float(v) for v in coco_mask.toBbox(rle)]
    if "points" in item:
        return _bounds(item["points"])
    if "keypoints" in item:
        shown = _shown_keypoints(item)
        return _bounds(shown) if shown else None
    return None


def polygon_area(points: Sequence[Sequence[float]]) -> float:
    xs = np.asarray([p[0] for p in points], dtype=np.float64)
    ys = np.asarray([p[1] for p in points], dtype=np.float64)
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)


# --- Splits ------------------------------------------------------------------------------------


class Splitter:
    """Seeded, stratified train/val/test assignment, one image at a time.

    Each image draws a uniform number from a hash of (seed, image id) and falls in a subset by
    the fractions, unless that subset already holds more than its share of the image's
    stratum (its most frequent label) by one image or more; then it goes to the subset
    furthest below its share. Every stratum stays within one image of its fractions, and the
    same seed gives the same split whatever else changes in the dataset.
    """

    def __init__(self, fractions: dict[str, float], seed: int) -> None:
        self.names = [s for s in SUBSETS if fractions.get(s, 0) > 0]
        total = sum(fractions[s] for s in self.names)
        self.share = {s: fractions[s] / total for s in self.names}
        self.seed = seed
        self.seen: Counter[str] = Counter()
        self.placed: dict[str, Counter[str]] = {}

    def _draw(self, image_id: int) -> float:
        digest = hashlib.blake2b(f"{self.seed}:{image_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def assign(self, image_id: int, stratum: str) -> str:
        placed = self.placed.setdefault(stratum, Counter())
        self.seen[stratum] += 1
        n = self.seen[stratum]
        draw, edge, chosen = self._draw(image_id), 0.0, self.names[-1]
        for name in self.names:
            edge += self.share[name]
            if draw < edge:
                chosen = name
                break
        if placed[chosen] + 1 - self.share[chosen] * n >= 1:
            chosen = max(
                self.names, key=lambda s: (self.share[s] * n - placed[s], -SUBSETS.index(s))
            )
        placed[chosen] += 1
        return chosen


def stratum(annotations: Sequence[dict[str, Any]]) -> str:
    """An image's stratum for splitting: its most frequent label (ties: first by name)."""
    if not annotations:
        return ""
    counts = Counter(item["label"] for item in annotations)
    return min(counts, key=lambda label: (-counts[label], label))


# --- COCO --------------------------------------------------------------------------------------


def coco_categories(kind: str, labels: Sequence[Label]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, label in enumerate(labels, start=1):
        category: dict[str, Any] = {"id": i, "name": label.name, "supercategory": ""}
        if kind == "keypoints":
            category["keypoints"] = list(label.keypoints)
            category["skeleton"] = []
        out.append(category)
    return out


def coco_annotation(
    item: dict[str, Any], *, kind: str, ann_id: int, image: Record, category: int, rle: bool
) -> dict[str, Any]:
    ann: dict[str, Any] = {"id": ann_id, "image_id": image.id, "category_id": category}
    if kind == "bbox":
        x, y, w, h = (float(v) for v in item["bbox"])
        ann.update(bbox=[_num(x), _num(y), _num(w), _num(h)], area=_num(w * h), segmentation=[])
    elif kind == "polygon":
        points = item["points"]
        ann["bbox"] = [_num(v) for v in _bounds(points)]
        if rle and "rle" in item:
            ann["segmentation"] = {
                "size": list(item["rle"]["size"]),
                "counts": item["rle"]["counts"],
            }
            ann["area"] = _num(float(coco_mask.area(_rle_bytes(item["rle"]))))
        else:
            ann["segmentation"] = [[_num(c) for p in points for c in p[:2]]]
            ann["area"] = _num(polygon_area(points))
    elif kind == "mask":
        rle_bytes = _rle_bytes(item["rle"])
        ann.update(
            segmentation={"size": list(item["rle"]["size"]), "counts": item["rle"]["counts"]},
            area=int(coco_mask.area(rle_bytes)),
            bbox=[_num(v) for v in coco_mask.toBbox(rle_bytes)],
        )
    elif kind == "keypoints":
        flat: list[float | int] = []
        for x, y, v in item["keypoints"]:
            flat += [_num(x), _num(y), int(v)] if v > 0 else [0, 0, 0]
        box = item_box(item) or [0.0, 0.0, 0.0, 0.0]
        ann.update(
            keypoints=flat,
            num_keypoints=sum(1 for k in item["keypoints"] if k[2] > 0),
            bbox=[_num(v) for v in box],
            area=_num(box[2] * box[3]),
            segmentation=[],
        )
    else:  # classification: an image-level annotation (Datumaro's "COCO labels")
        pass
    if kind != "classification":
        ann["iscrowd"] = 0
    ann["score"] = float(item.get("score", 1.0))
    ann["num_votes"] = int(item.get("num_votes", 0))
    # CVAT's and Datumaro's COCO keep per-annotation attributes here.
    ann["attributes"] = {"machine_labelled": image.machine_labelled}
    return ann


def _rle_bytes(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def write_coco(
    out: IO[bytes],
    records: Iterable[Record],
    *,
    kind: str,
    labels: Sequence[Label],
    description: str,
    rle: bool = False,
) -> Counts:
    """A COCO file: ``info``, ``licenses``, ``categories``, ``images`` (with
    ``machine_labelled``; classification adds ``label``, ``score`` and ``num_votes``),
    ``annotations`` (with ``score``, ``num_votes`` and ``attributes.machine_labelled``)."""
    category_of = {label.name: i for i, label in enumerate(labels, start=1)}
    counts = Counts()
    header = {
        "info": {"description": description, "version": "", "contributor": "", "url": ""},
        "licenses": [],
        "categories": coco_categories(kind, labels),
    }
    out.write(orjson.dumps(header)[:-1] + b',"images":[')
    ann_id = 0
    with tempfile.TemporaryFile() as spool:
        first_image = True
        for record in records:
            image: dict[str, Any] = {
                "id": record.id,
                "file_name": record.file_name,
                "width": record.width,
                "height": record.height,
                "machine_labelled": record.machine_labelled,
            }
            items = list(record.annotations)
            if kind == "classification" and items:
                image.update(
                    label=items[0]["label"],
                    score=float(items[0].get("score", 1.0)),
                    num_votes=int(items[0].get("num_votes", 0)),
                )
            if not first_image:
                out.write(b",")
            out.write(orjson.dumps(image))
            first_image = False
            chunk = []
            for item in items:
                ann_id += 1
                chunk.append(
                    orjson.dumps(
                        coco_annotation(
                            item, kind=kind, ann_id=ann_id, image=record,
                            category=category_of[item["label"]], rle=rle,
                        )
                    )
                )  # fmt: skip
            if chunk:
                if ann_id > len(chunk):
                    spool.write(b",")
                spool.write(b",".join(chunk))
            counts.add(record, items)
        out.write(b'],"annotations":[')
        spool.seek(0)
        shutil.copyfileobj(spool, out, COPY_CHUNK)
    out.write(b"]}")
    return counts


def write_coco_zip(
    out: IO[bytes],
    records: Iterable[Record],
    *,
    kind: str,
    labels: Sequence[Label],
    description: str,
    card: Callable[[Counts], str],
    rle: bool = False,
) -> Counts:
    """COCO with the images, in the layout Datumaro and CVAT read:
    ``annotations/instances_default.json`` and ``images/default/<file>``."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:

        def shipping(records: Iterable[Record]) -> Iterator[Record]:
            for record in records:
                _ship_image(archive, f"images/default/{record.file_name}", record)
                yield record

        task = "labels" if kind == "classification" else "instances"
        if kind == "keypoints":
            task = "person_keypoints"
        with tempfile.TemporaryFile() as coco:
            counts = write_coco(
                coco, shipping(records), kind=kind, labels=labels, description=description, rle=rle
            )
            coco.seek(0)
            zip_copy(archive, f"annotations/{task}_default.json", coco, compress=True)
        zip_write(archive, "README.md", card(counts))
    return counts


# --- YOLO (Ultralytics) ------------------------------------------------------------------------


def yolo_lines(record: Record, *, kind: str, category_of: dict[str, int], kpts: int) -> str:
    w, h = float(record.width), float(record.height)
    lines = []
    for item in record.annotations:
        cls = category_of[item["label"]]
        if kind == "bbox":
            x, y, bw, bh = (float(v) for v in item["bbox"])
            lines.append(
                f"{cls} {_norm((x + bw / 2) / w)} {_norm((y + bh / 2) / h)} "
                f"{_norm(bw / w)} {_norm(bh / h)}"
            )
        elif kind == "polygon":
            coords = " ".join(f"{_norm(px / w)} {_norm(py / h)}" for px, py in item["points"])
            lines.append(f"{cls} {coords}")
        elif kind == "mask":
            for outline in mask_outlines(item["rle"]):
                coords = " ".join(f"{_norm(px / w)} {_norm(py / h)}" for px, py in outline)
                lines.append(f"{cls} {coords}")
        elif kind == "keypoints":
            box = item_box(item)
            if box is None:
                continue
            x, y, bw, bh = box
            points = [
                f"{_norm(px / w)} {_norm(py / h)} {int(v)}" if v > 0 else "0.000000 0.000000 0"
                for px, py, v in item["keypoints"]
            ]
            points += ["0.000000 0.000000 0"] * (kpts - len(points))
            lines.append(
                f"{cls} {_norm((x + bw / 2) / w)} {_norm((y + bh / 2) / h)} "
                f"{_norm(bw / w)} {_norm(bh / h)} " + " ".join(points)
            )
    return "".join(line + "\n" for line in lines)


def decode_mask(rle: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """A COCO RLE as a (height, width) array of 0 and 1."""
    # pycocotools' decoder hands numpy 2 an array view the old way; numpy warns, and copies.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mask: npt.NDArray[np.uint8] = coco_mask.decode(_rle_bytes(rle))
    return mask


def mask_outlines(rle: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """The outline of each region of a mask, on the pixel edges, largest first."""
    from qa.consensus.polygons import trace_outlines

    return trace_outlines(decode_mask(rle))


def yolo_yaml(kind: str, labels: Sequence[Label], subsets: Sequence[str]) -> str:
    lines = ["# Ultralytics YOLO dataset; the dataset card is README.md", "path: ."]
    present = [name for name in SUBSETS if name in subsets] or ["train"]
    lines += [f"{name}: images/{name}" for name in present]
    if "val" not in present:  # Ultralytics needs a validation set to train
        lines.append(f"val: images/{present[0]}")
    if kind == "keypoints":
        lines.append(f"kpt_shape: [{max((len(x.keypoints) for x in labels), default=0)}, 3]")
    lines.append("names:")
    lines += [f"  {i}: {json.dumps(label.name)}" for i, label in enumerate(labels)]
    return "\n".join(lines) + "\n"


def write_yolo(
    out: IO[bytes],
    records: Iterable[Record],
    *,
    kind: str,
    labels: Sequence[Label],
    card: Callable[[Counts], str],
    subsets: Sequence[str] = (),
) -> Counts:
    """``images/<subset>/<file>``, ``labels/<subset>/<stem>.txt`` (subset ``train`` without a
    split), ``data.yaml``. Detection
    lines are ``class xc yc w h``, segments ``class x1 y1 x2 y2 ...``, pose adds ``x y v`` per
    keypoint, all normalised to [0, 1]. Classification is Ultralytics' folder layout:
    ``<subset>/<class>/<file>`` (``train`` without a split), images always shipped.
    ``machine_labelled.txt`` lists the label files (classification: the images) the model
    labelled alone."""
    category_of = {label.name: i for i, label in enumerate(labels)}
    kpts = max((len(x.keypoints) for x in labels), default=0)
    counts = Counts()
    machine: list[str] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for record in records:
            items = list(record.annotations)
            counts.add(record, items)
            if kind == "classification":
                if items:
                    folder = f"{record.subset or 'train'}/{items[0]['label']}"
                    _ship_image(archive, f"{folder}/{record.file_name}", record)
                    if record.machine_labelled:
                        machine.append(f"{folder}/{record.file_name}")
                continue
            sub = record.subset or "train"
            _ship_image(archive, f"images/{sub}/{record.file_name}", record)
            text = yolo_lines(record, kind=kind, category_of=category_of, kpts=kpts)
            zip_write(archive, f"labels/{sub}/{stem(record.file_name)}.txt", text)
            if record.machine_labelled:
                machine.append(f"labels/{sub}/{stem(record.file_name)}.txt")
        if kind != "classification":
            zip_write(archive, "data.yaml", yolo_yaml(kind, labels, list(subsets)))
        zip_write(archive, MACHINE_LABELLED_LIST, machine_labelled_list(machine))
        zip_write(archive, "README.md", card(counts))
    return counts


# --- Pascal VOC --------------------------------------------------------------------------------


def voc_xml(record: Record, *, folder: str, segmented: bool = False) -> str:
    objects = []
    for item in record.annotations:
        box = item_box(item)
        if box is None:
            continue
        x, y, w, h = box
        objects.append(
            "  <object>\n"
            f"    <name>{escape(item['label'])}</name>\n"
            "    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
            "    <difficult>0</difficult>\n    <occluded>0</occluded>\n"
            "    <bndbox>\n"
            f"      <xmin>{_num(x)}</xmin>\n      <ymin>{_num(y)}</ymin>\n"
            f"      <xmax>{_num(x + w)}</xmax>\n      <ymax>{_num(y + h)}</ymax>\n"
            "    </bndbox>\n"
            f"    <score>{round(float(item.get('score', 1.0)), 6)}</score>\n"
            f"    <num_votes>{int(item.get('num_votes', 0))}</num_votes>\n"
            "  </object>\n"
        )
    return (
        "<annotation>\n"
        f"  <folder>{folder}</folder>\n"
        f"  <filename>{escape(record.file_name)}</filename>\n"
        "  <source><database>crowd</database></source>\n"
        f"  <size><width>{record.width}</width><height>{record.height}</height>"
        "<depth>3</depth></size>\n"
        f"  <segmented>{int(segmented)}</segmented>\n"
        f"  <machine_labelled>{int(record.machine_labelled)}</machine_labelled>\n"
        + "".join(objects)
        + "</annotation>\n"
    )


def _rgb(color: str) -> str:
    value = color.lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", value):
        return "0,0,0"
    return ",".join(str(int(value[i : i + 2], 16)) for i in (0, 2, 4))


def _color(color: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in _rgb(color).split(","))  # type: ignore[return-value]


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """Pascal VOC's colour map: index ``i`` spreads its bits over the three channels."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


# Palette indices a segmentation PNG can give objects or labels: 0 is the background and 255
# VOC's "void" (unlabelled border).
MAX_SEGMENTATION_INDEX = 254


def _png(
    index: npt.NDArray[np.uint8],
    palette: Sequence[tuple[int, int, int]],
    compress_level: int = 6,
) -> bytes:
    from PIL import Image as PilImage

    image = PilImage.fromarray(index, mode="P")
    flat = [v for rgb in palette for v in rgb]
    image.putpalette(flat + [0] * (768 - len(flat)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=compress_level)
    return buffer.getvalue()


def voc_segmentation(
    record: Record, items: Sequence[dict[str, Any]], category_of: dict[str, int]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """An image's class and object index maps from its mask items (in the order of its
    ``Annotations`` objects): the more confident object wins a pixel two share."""
    classes = np.zeros((record.height, record.width), dtype=np.uint8)
    objects = np.zeros((record.height, record.width), dtype=np.uint8)
    ranked = sorted(
        range(len(items)), key=lambda k: (float(items[k].get("score", 1.0)), -k)
    )  # least confident first, painted over by the more confident
    for k in ranked:
        if k >= MAX_SEGMENTATION_INDEX:
            continue
        inside = decode_mask(items[k]["rle"]) > 0
        classes[inside] = category_of[items[k]["label"]]
        objects[inside] = k + 1
    return classes, objects


def write_voc(
    out: IO[bytes],
    records: Iterable[Record],
    *,
    labels: Sequence[Label],
    card: Callable[[Counts], str],
    kind: str = "bbox",
) -> Counts:
    """``Annotations/<stem>.xml`` (boxes; polygons, masks and keypoint instances by their
    bounds), ``ImageSets/Main/<subset>.txt``, ``JPEGImages/<file>`` when images are shipped,
    and ``labelmap.txt`` (names and colours) so readers need not assume VOC's 20 classes.
    Each XML says ``<machine_labelled>`` (1: the model alone labelled it), and
    ``machine_labelled.txt`` lists those files.
    Masks add ``SegmentationClass/`` and ``SegmentationObject/`` PNGs (see the module) and
    ``ImageSets/Segmentation/<subset>.txt``."""
    counts = Counts()
    members: dict[str, list[str]] = {}
    machine: list[str] = []
    segmented = kind == "mask"
    category_of = {label.name: i for i, label in enumerate(labels, start=1)}
    class_palette = [(0, 0, 0)] + [_color(label.color) for label in labels]
    object_palette = voc_colormap()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for record in records:
            items = [i for i in record.annotations if item_box(i) is not None]
            counts.add(record, items)
            name = stem(record.file_name)
            members.setdefault(record.subset or "default", []).append(name)
            if record.machine_labelled:
                machine.append(f"Annotations/{name}.xml")
            _ship_image(archive, f"JPEGImages/{record.file_name}", record)
            shown = replace(record, annotations=items)
            zip_write(
                archive,
                f"Annotations/{name}.xml",
                voc_xml(shown, folder="JPEGImages", segmented=segmented),
            )
            if segmented:
                classes, objects = voc_segmentation(record, items, category_of)
                zip_write(archive, f"SegmentationClass/{name}.png", _png(classes, class_palette))
                zip_write(archive, f"SegmentationObject/{name}.png", _png(objects, object_palette))
        for subset, names in sorted(members.items()):
            listing = "".join(n + "\n" for n in names)
            zip_write(archive, f"ImageSets/Main/{subset}.txt", listing)
            if segmented:
                zip_write(archive, f"ImageSets/Segmentation/{subset}.txt", listing)
        labelmap = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
        labelmap += [f"{label.name}:{_rgb(label.color)}::" for label in labels]
        zip_write(archive, "labelmap.txt", "\n".join(labelmap) + "\n")
        zip_write(archive, MACHINE_LABELLED_LIST, machine_labelled_list(machine))
        zip_write(archive, "README.md", card(counts))
    return counts


# --- Cityscapes ---------------------------------------------------------------------------------

# Cityscapes codes an instance as its class id times 1000 plus its index among the image's
# objects of that class (0, 1, ...), in a 16-bit PNG: class ids up to 64 leave room for
# indices 0..999 (64,999 < 65,536).
CITYSCAPES_INSTANCE_FACTOR = 1000
MAX_CITYSCAPES_INSTANCE_CLASSES = 64
# One folder a city under each subset; a project has no cities, so every image is in one.
CITYSCAPES_CITY = "default"
# zlib level of the gtFine PNGs: a mask's long runs compress well at any level, and level 3
# takes a third of the default's time on a 16-bit map for a few kB more an image.
CITYSCAPES_PNG_LEVEL = 3


def cityscapes_ids(
    record: Record,
    items: Sequence[dict[str, Any]],
    category_of: dict[str, int],
    *,
    instances: bool,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint16]]:
    """An image's label id map (0 unlabelled, label ``i`` at ``i``) and instance id map.

    With ``instances``, the ``n``-th object of a class (in the order of ``items``) is
    ``class * 1000 + n``; past 1,000 objects of one class an image, the rest are written as
    the bare class id, Cityscapes' mark for a group of objects not told apart. Without
    (semantic masks), the instance map holds the class ids, as Cityscapes does for classes
    without instances. The more confident object wins a pixel two share."""
    classes = np.zeros((record.height, record.width), dtype=np.uint8)
    objects = np.zeros((record.height, record.width), dtype=np.uint16)
    seen: Counter[int] = Counter()
    instance_id: list[int] = []
    for item in items:
        cls = category_of[item["label"]]
        index = seen[cls]
        seen[cls] += 1
        within = instances and index < CITYSCAPES_INSTANCE_FACTOR
        instance_id.append(cls * CITYSCAPES_INSTANCE_FACTOR + index if within else cls)
    ranked = sorted(range(len(items)), key=lambda k: (float(items[k].get("score", 1.0)), -k))
    for k in ranked:  # least confident first, painted over by the more confident
        inside = decode_mask(items[k]["rle"]) > 0
        classes[inside] = category_of[items[k]["label"]]
        objects[inside] = instance_id[k]
    return classes, objects


def _gray_png(values: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]) -> bytes:
    """An 8-bit or 16-bit greyscale PNG of the values as they are (no palette)."""
    from PIL import Image as PilImage

    if values.dtype == np.uint16:
        size = (values.shape[1], values.shape[0])
        image = PilImage.frombytes("I;16", size, values.astype("<u2").tobytes())
    else:
        image = PilImage.fromarray(values, mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=CITYSCAPES_PNG_LEVEL)
    return buffer.getvalue()


def cityscapes_label_colors(labels: Sequence[Label]) -> str:
    """``label_colors.txt`` as Datumaro's Cityscapes format reads it: ``r g b name`` a line,
    the line number being the label id, ``background`` (0) first."""
    lines = ["0 0 0 background"]
    lines += [f"{_rgb(label.color).replace(',', ' ')} {label.name}" for label in labels]
    return "\n".join(lines) + "\n"


def cityscapes_meta(labels: Sequence[Label]) -> str:
    """``dataset_meta.json`` (Datumaro's label file, which it reads before
    ``label_colors.txt``): names with spaces survive it."""
    names = ["background", *(label.name for label in labels)]
    colors = [[0, 0, 0], *([*_color(label.color)] for label in labels)]
    meta = {
        "labels": names,
        "label_map": {str(i): name for i, name in enumerate(names)},
        "segmentation_colors": colors,
        "background_label": "0",
    }
    return json.dumps(meta, indent=2, ensure_ascii=False) + "\n"


def write_cityscapes(
    out: IO[bytes],
    records: Iterable[Record],
    *,
    labels: Sequence[Label],
    card: Callable[[Counts], str],
    instances: bool = True,
) -> Counts:
    """Cityscapes' ``gtFine`` layout, one folder a subset (``train`` without a split) and one
    city (``default``) in it. Per image ``<stem>_gtFine_labelIds.png`` (8-bit: 0 unlabelled,
    label ``i`` at ``i``, as the lines of ``label_colors.txt``), ``<stem>_gtFine_instanceIds.png``
    (16-bit, see :func:`cityscapes_ids`), ``<stem>_gtFine_labelTrainIds.png`` (the same ids as
    labelIds: every label is trained, none ignored; what mmsegmentation's and Datumaro's
    Cityscapes readers load) and ``<stem>_gtFine_color.png`` (the labels' colours); the image
    as ``leftImg8bit/<subset>/default/<stem>_leftImg8bit.<ext>`` when images are shipped.
    PNGs are stored in the zip as they are: deflating them again saves nothing."""
    counts = Counts()
    category_of = {label.name: i for i, label in enumerate(labels, start=1)}
    palette = [(0, 0, 0)] + [_color(label.color) for label in labels]
    folders: set[str] = set()
    machine: list[str] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for record in records:
            items = [i for i in record.annotations if item_box(i) is not None]
            counts.add(record, items)
            subset = record.subset or "train"
            if subset not in folders:
                # Readers look for both trees of a subset, even when one holds no file.
                folders.add(subset)
                for tree in ("gtFine", "leftImg8bit"):
                    archive.writestr(zip_info(f"{tree}/{subset}/{CITYSCAPES_CITY}/"), b"")
            name = stem(record.file_name)
            gt = f"gtFine/{subset}/{CITYSCAPES_CITY}/{name}_gtFine_"
            if record.machine_labelled:
                machine.append(gt + "labelIds.png")
            ext = record.file_name.rsplit(".", 1)[-1] if "." in record.file_name else "png"
            _ship_image(
                archive, f"leftImg8bit/{subset}/{CITYSCAPES_CITY}/{name}_leftImg8bit.{ext}", record
            )
            classes, objects = cityscapes_ids(record, items, category_of, instances=instances)
            label_ids = _gray_png(classes)
            for suffix, data in (
                ("labelIds.png", label_ids),
                ("labelTrainIds.png", label_ids),
                ("instanceIds.png", _gray_png(objects)),
                ("color.png", _png(classes, palette, CITYSCAPES_PNG_LEVEL)),
            ):
                archive.writestr(zip_info(gt + suffix, compress=False), data)
        zip_write(archive, "label_colors.txt", cityscapes_label_colors(labels))
        zip_write(archive, "dataset_meta.json", cityscapes_meta(labels))
        zip_write(archive, MACHINE_LABELLED_LIST, machine_labelled_list(machine))
        zip_write(archive, "README.md", card(counts))
    return counts


# --- CSV and raw answers -------------------------------------------------------------------------


def write_csv(
    out: IO[bytes], records: Iterable[Record], *, card: Callable[[Counts], str]
) -> Counts:
    """``labels.csv``: ``image_id, file_name, label, confidence, votes, machine_labelled``
    (classification; 1 when the model alone labelled the image)."""
    counts = Counts()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(zip_info("labels.csv"), "w", force_zip64=True) as member:
            text = io.TextIOWrapper(member, encoding="utf-8", newline="")
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(
                ["image_id", "file_name", "label", "confidence", "votes", "machine_labelled"]
            )
            for record in records:
                items = list(record.annotations)
                counts.add(record, items)
                label = items[0]["label"] if items else ""
                confidence = "" if record.confidence is None else f"{record.confidence:.6f}"
                writer.writerow(
                    [record.id, record.file_name, label, confidence, record.votes,
                     int(record.machine_labelled)]
                )  # fmt: skip
            text.flush()
            text.detach()
        zip_write(archive, "README.md", card(counts))
    return counts


def write_raw(
    out: IO[bytes], answers: Iterable[dict[str, Any]], *, card: Callable[[Counts], str]
) -> Counts:
    """``answers.jsonl``: every worker answer, one JSON object a line, as given; an image the
    model labelled alone is one line of ``"worker": "model"`` with ``"machine_labelled":
    true`` (false on every person's answer)."""
    counts = Counts()
    images: set[int] = set()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(zip_info("answers.jsonl"), "w", force_zip64=True) as member:
            for answer in answers:
                member.write(orjson.dumps(answer) + b"\n")
                counts.annotations += 0 if answer.get("machine_labelled") else 1
                if answer["image"] not in images:
                    images.add(answer["image"])
                    counts.images += 1
                    counts.machine_labelled += int(bool(answer.get("machine_labelled")))
        zip_write(archive, "README.md", card(counts))
    return counts
