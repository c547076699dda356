"""Objects per image in the formats models and labelling tools write them, read into our
annotation items. Pure, but for the temporary file a shuffled COCO file's annotations may wait
in (:class:`_Held`). Two readings of the same formats: a model's predictions (with a model
version and scores), and a manager's labelled images taken as gold (``gold=True``: no model
version, scores ignored, and from Label Studio the tasks' human ``annotations``).

Three inputs, each read from a ``crowd.json_stream.JsonSource`` (a parsed body, or an upload
walked element by element, never parsed whole) into :class:`Candidate` s (one image's objects,
named by image id or by file name), which the caller matches to the project's images and
validates like answers (see ``tasks.annotation_imports``). Ours and Label Studio's are handed
over one item at a time; COCO's annotations may come in any order, so a COCO file is walked
twice, and each image handed over after its last annotation (see :func:`read_coco`):

- ours: ``{"model_version", "predictions": [...]}`` or ``{"gold": [...]}``, each item
  ``{"image": id | "file_name": name, "annotations": [...], "score"?}``;
- COCO: a full dataset (``images`` matched by ``file_name``, ``categories`` by name; every
  listed image gets an entry, an empty one when it has no annotation) or a results list
  (``[{"image_id", "category_id", "bbox"|"segmentation"|"keypoints", "score"}]``, image ids
  and category ids as this server's images and COCO exports number them);
- Label Studio tasks (``data.image`` matched by file name) with ``predictions`` (or, as
  gold, ``annotations``), whose results are converted from percent of the image to pixels
  (brush masks from their packed runs, ``tasks.ls_brush``) by :func:`from_label_studio`, the
  same conversion ML backends' answers go through.

Also :func:`label_config`, the Label Studio labelling config of a project's labels.
"""

from __future__ import annotations

import math
import pickle
import posixpath
import re
import tempfile
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import quoteattr

import numpy as np

from crowd.json_stream import MISSING, JsonSource

FORMATS = ("crowd", "coco", "label_studio")
MAX_VERSION_CHARS = 200
# Label Studio's own names for the regions of each of our kinds.
LS_TYPES = {
    "bbox": "rectanglelabels",
    "polygon": "polygonlabels",
    "keypoints": "keypointlabels",
    "classification": "choices",
    "mask": "brushlabels",
}
LS_TAGS = {
    "bbox": "RectangleLabels",
    "polygon": "PolygonLabels",
    "keypoints": "KeyPointLabels",
    "classification": "Choices",
    "mask": "BrushLabels",
}
# Label Studio prefixes uploaded files' names with 8 hex digits and a dash.
_LS_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
# How far the aspect ratio a backend saw may differ from the image's before its percent
# coordinates are taken to be of another picture (a rotated or cropped one).
ASPECT_TOLERANCE = 0.02
# How many annotations of a COCO file waiting for their image's last one are held in memory;
# past that they wait in a temporary file (a shuffled file's).
HELD_IN_MEMORY = 20_000


class FormatError(ValueError):
    """The input as a whole cannot be read: ``errors`` names each place (``images[3]``)."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


@dataclass
class Candidate:
    """One image's objects (as predictions, items with ``score``) from the input, before
    they are matched to an image and validated."""

    index: int  # the position in the input list it came from
    where: str  # that list, e.g. "predictions[3]", "images[0]", "tasks[2]"
    model_version: str  # "" for gold
    image_id: int | None = None
    file_name: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    score: float | None = None
    # Label Studio: the regions, converted once the image (and so its size) is known.
    raw_result: Any = None
    # Problems found while reading it (keyed by place); the caller adds the validator's.
    errors: dict[str, list[str]] = field(default_factory=dict)
    # False for gold: the input's scores are ignored, not read.
    scored: bool = True

    def fail(self, where: str, message: str) -> None:
        self.errors.setdefault(where, []).append(message)


@dataclass(frozen=True)
class LabelSpec:
    name: str
    keypoints: tuple[str, ...] = ()


def score_of(value: Any) -> tuple[float | None, str | None]:
    """A score in 0..1 (or None), or the reason it is not one."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, "A score is a finite number from 0 to 1."
    if not 0 <= value <= 1:
        return None, f"A score is from 0 to 1; got {value:g}."
    return float(value), None


def version_of(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FormatError({where: ["Name the model version as a non-empty string."]})
    if len(value) > MAX_VERSION_CHARS:
        raise FormatError({where: [f"A model version has at most {MAX_VERSION_CHARS} characters."]})
    return value.strip()


def detect(source: JsonSource, *, gold: bool = False) -> str:
    """The format of a file, from its shape: an object whose first telling key is ours
    (``predictions``, ``gold``) or COCO's (``images``, ``annotations``), or an array whose
    first element is a Label Studio task or a COCO result."""
    ours = "gold" if gold else "predictions"
    shape = source.shape()
    if shape == "object":
        key = source.first_key({ours, "images", "annotations"})
        if key == ours:
            return "crowd"
        if key is not None:
            return "coco"
    elif shape == "array":
        first = source.first_element()
        if isinstance(first, dict) and "data" in first:
            return "label_studio"
        if isinstance(first, dict) and "image_id" in first:
            return "coco"
    shape_of_ours = '{"gold": [...]}' if gold else '{"model_version", "predictions"}'
    what = "gold" if gold else "predictions"
    raise FormatError(
        {
            "format": [
                f"Not a {what} file this server reads: give ours ({shape_of_ours}), a COCO "
                "dataset or "
                "results list, or Label Studio tasks, or name the format."
            ]
        }
    )


# --- Ours -------------------------------------------------------------------------------------


def read_crowd(
    source: JsonSource, model_version: str | None, *, gold: bool = False
) -> Iterator[Candidate]:
    key = "gold" if gold else "predictions"
    if source.shape() != "object" or not source.is_array(key):
        shape = '{"gold": [...]}' if gold else '{"model_version", "predictions": [...]}'
        raise FormatError({key: [f"Give {shape}."]})
    version = ""
    if not gold:
        given = source.value("model_version")
        version = version_of(model_version if given is MISSING else given, "model_version")
    for i, raw in enumerate(source.elements(key)):
        where = f"{key}[{i}]"
        cand = Candidate(index=i, where=where, model_version=version, scored=not gold)
        if not isinstance(raw, dict):
            shape = '"annotations"' if gold else '"annotations", "score"?'
            cand.fail(where, f'Each item is {{"image" or "file_name", {shape}}}.')
            yield cand
            continue
        image, name = raw.get("image"), raw.get("file_name")
        if image is None and isinstance(name, str) and name:
            cand.file_name = name
        elif isinstance(image, bool) or not isinstance(image, int):
            cand.fail(
                f"{where}.image",
                "Give the image's id (as the image list shows it), or its file_name.",
            )
        else:
            cand.image_id = image
        if not gold:
            cand.score, problem = score_of(raw.get("score"))
            if problem:
                cand.fail(f"{where}.score", problem)
        items = raw.get("annotations")
        if not isinstance(items, list):
            cand.fail(f"{where}.annotations", "Give the annotations as a list.")
        else:
            cand.items = items
        yield cand


# --- COCO -------------------------------------------------------------------------------------


def read_coco(
    source: JsonSource,
    model_version: str | None,
    *,
    kind: str,
    labels: Sequence[LabelSpec],
    gold: bool = False,
) -> Iterator[Candidate]:
    """A COCO dataset or results list. Its annotations may come in any order, so they are
    walked twice: the first walk notes where each image's last annotation is (and refuses a
    file that cannot be read), the second hands an image over as soon as its last one is
    read. A file ordered by image (as detectors write them) thus holds one image's objects at
    a time; a shuffled one holds those still waiting, past ``HELD_IN_MEMORY`` in a temporary
    file. A dataset's images without annotations come last."""
    version = "" if gold else version_of(model_version, "model_version")
    shape = source.shape()
    if shape == "array":
        return _coco_results(source, version, kind=kind, labels=labels, gold=gold)
    if shape != "object":
        raise FormatError({"file": ["A COCO file is a dataset object or a results list."]})
    if not source.is_array("images") or not source.is_array("annotations"):
        raise FormatError({"images": ['A COCO dataset has "images" and "annotations" lists.']})
    categories = source.value("categories")
    if categories is MISSING:
        categories = []
    if not isinstance(categories, list):
        raise FormatError({"categories": ["Give the categories as a list."]})
    names: dict[Any, str] = {}
    for i, cat in enumerate(categories):
        if (
            not isinstance(cat, dict)
            or not isinstance(cat.get("name"), str)
            or "id" not in cat
            or not _is_key(cat["id"])
        ):
            raise FormatError({f"categories[{i}]": ['A category is {"id", "name"}.']})
        names[cat["id"]] = cat["name"]
    by_id: dict[Any, Candidate] = {}
    for i, img in enumerate(source.elements("images")):
        where = f"images[{i}]"
        if (
            not isinstance(img, dict)
            or "id" not in img
            or not _is_key(img["id"])
            or not isinstance(img.get("file_name"), str)
        ):
            raise FormatError({where: ['A COCO image is {"id", "file_name", ...}.']})
        if img["id"] in by_id:
            raise FormatError({where: [f"Image id {img['id']!r} is listed twice."]})
        by_id[img["id"]] = Candidate(
            index=i,
            where=where,
            model_version=version,
            file_name=img["file_name"],
            scored=not gold,
        )

    def image_of(ann: Any, where: str) -> Any:
        if not isinstance(ann, dict):
            raise FormatError({where: ["Each annotation is a JSON object."]})
        image_id = ann.get("image_id")
        if not _is_key(image_id) or image_id not in by_id:
            raise FormatError({where: [f"image_id {image_id!r} is not in images."]})
        return image_id

    last = _last_annotations(source.elements("annotations"), image_of, "annotations")
    return _coco_dataset(source, by_id, last, names, kind)


def _is_key(value: Any) -> bool:
    """Whether a JSON value can be an id: a string or a number (not a list or an object)."""
    return isinstance(value, str | int | float) or value is None


def _last_annotations(
    elements: Iterator[Any], image_of: Callable[[Any, str], Any], where: str
) -> dict[Any, int]:
    """The first walk: the position of each image's last annotation."""
    last: dict[Any, int] = {}
    for j, ann in enumerate(elements):
        last[image_of(ann, f"{where}[{j}]")] = j
    return last


def _coco_dataset(
    source: JsonSource,
    by_id: dict[Any, Candidate],
    last: dict[Any, int],
    names: dict[Any, str],
    kind: str,
) -> Iterator[Candidate]:
    for image_id, image_anns in _by_image(source.elements("annotations"), last):
        cand = by_id.pop(image_id)
        for j, ann in image_anns:
            where = f"annotations[{j}]"
            name = names.get(ann.get("category_id")) if _is_key(ann.get("category_id")) else None
            if name is None:
                cand.fail(where, f"category_id {ann.get('category_id')!r} is not in categories.")
            else:
                _coco_item(cand, ann, name, where, kind=kind)
        yield cand
    yield from by_id.values()


def _coco_results(
    source: JsonSource, version: str, *, kind: str, labels: Sequence[LabelSpec], gold: bool
) -> Iterator[Candidate]:
    def image_of(ann: Any, where: str) -> int:
        if not isinstance(ann, dict):
            raise FormatError({where: ["Each result is a JSON object."]})
        image_id = ann.get("image_id")
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise FormatError(
                {f"{where}.image_id": ["Give the image's id as this server numbers it."]}
            )
        return image_id

    last = _last_annotations(source.elements(None), image_of, "")
    return _coco_results_gathered(source, last, version, kind=kind, labels=labels, gold=gold)


def _coco_results_gathered(
    source: JsonSource,
    last: dict[Any, int],
    version: str,
    *,
    kind: str,
    labels: Sequence[LabelSpec],
    gold: bool,
) -> Iterator[Candidate]:
    for image_id, image_anns in _by_image(source.elements(None), last):
        first = image_anns[0][0]
        cand = Candidate(
            index=first, where=f"[{first}]", model_version=version, image_id=image_id,
            scored=not gold,
        )  # fmt: skip
        for j, ann in image_anns:
            where = f"[{j}]"
            category = ann.get("category_id")
            if (
                isinstance(category, bool)
                or not isinstance(category, int)
                or not 1 <= category <= len(labels)
            ):
                cand.fail(
                    f"{where}.category_id",
                    f"A category id is a label's position, 1 to {len(labels)}, as this "
                    "server's COCO exports number them.",
                )
            else:
                _coco_item(cand, ann, labels[category - 1].name, where, kind=kind)
        yield cand


def _by_image(
    elements: Iterator[Any], last: dict[Any, int]
) -> Iterator[tuple[Any, list[tuple[int, Any]]]]:
    """The second walk: each image's annotations with their positions, in the file's order,
    handed over when its last one is read. Those of images still open are held (see
    :class:`_Held`)."""
    with _Held(HELD_IN_MEMORY) as held:
        for j, ann in enumerate(elements):
            image_id = ann["image_id"]
            if last[image_id] == j:
                yield image_id, [*held.take(image_id), (j, ann)]
            else:
                held.keep(image_id, j, ann)


class _Held:
    """Annotations waiting for their image's last one: the first ``limit`` in memory, the
    rest pickled into a temporary file with only their places in memory (16 bytes each), so
    that a shuffled file's peak stays near an ordered one's. Pickle keeps every value as the
    walk read it (integers of any size, the infinity a huge number reads as)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_memory: dict[Any, list[tuple[int, Any]]] = {}
        self.count = 0
        self.spilled: dict[Any, array[int]] = {}
        self.file: IO[bytes] | None = None
        self.end = 0

    def __enter__(self) -> _Held:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()

    def keep(self, key: Any, position: int, ann: Any) -> None:
        if self.count < self.limit:
            self.in_memory.setdefault(key, []).append((position, ann))
            self.count += 1
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
        data = pickle.dumps((position, ann), protocol=pickle.HIGHEST_PROTOCOL)
        self.file.seek(self.end)
        self.file.write(data)
        self.spilled.setdefault(key, array("q")).extend((self.end, len(data)))
        self.end += len(data)

    def take(self, key: Any) -> list[tuple[int, Any]]:
        """The held annotations of ``key``, in the file's order, forgotten here."""
        out = self.in_memory.pop(key, [])
        self.count -= len(out)
        places = self.spilled.pop(key, None)
        if places is not None and self.file is not None:
            for k in range(0, len(places), 2):
                self.file.seek(places[k])
                out.append(pickle.loads(self.file.read(places[k + 1])))
            out.sort(key=lambda entry: entry[0])
        return out


def _coco_item(
    cand: Candidate, ann: Mapping[str, Any], label: str, where: str, *, kind: str
) -> None:
    item: dict[str, Any] = {"label": label}
    if cand.scored:
        score, problem = score_of(ann.get("score"))
        if problem:
            cand.fail(f"{where}.score", problem)
            return
        item["score"] = score
    if kind == "bbox":
        item["bbox"] = ann.get("bbox")
    elif kind == "polygon":
        seg = ann.get("segmentation")
        parts = seg if isinstance(seg, list) else None
        if not parts or not all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in parts
        ):
            cand.fail(
                f"{where}.segmentation",
                "A polygon project reads polygons: [[x1, y1, x2, y2, ...]].",
            )
            return
        # An object in several parts (cut by an occluder) is one object: its largest part.
        flat = max(parts, key=_flat_polygon_area)
        item["points"] = [[flat[k], flat[k + 1]] for k in range(0, len(flat), 2)]
    elif kind == "keypoints":
        flat = ann.get("keypoints")
        if not isinstance(flat, list) or len(flat) % 3:
            cand.fail(f"{where}.keypoints", "Keypoints are a flat list [x1, y1, v1, ...].")
            return
        item["keypoints"] = [flat[k : k + 3] for k in range(0, len(flat), 3)]
    elif kind == "mask":
        seg = ann.get("segmentation")
        if not isinstance(seg, dict) or not isinstance(seg.get("counts"), str):
            cand.fail(
                f"{where}.segmentation",
                'A mask project reads compressed RLE: {"size": [h, w], "counts": "..."}.',
            )
            return
        item["rle"] = {"size": seg.get("size"), "counts": seg["counts"]}
    cand.items.append(item)


def _flat_polygon_area(flat: list[Any]) -> float:
    try:
        xs, ys = [float(v) for v in flat[0::2]], [float(v) for v in flat[1::2]]
    except (TypeError, ValueError):
        return 0.0
    return 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))


# --- Label Studio -----------------------------------------------------------------------------


def file_name_of(url: Any) -> str | None:
    """The file name a Label Studio task's image URL ends in (its upload prefix dropped)."""
    if not isinstance(url, str) or not url:
        return None
    path = unquote(urlsplit(url).path) if "://" in url or url.startswith("/") else url
    # Label Studio's local files: /data/local-files/?d=folder/name.jpg
    query = urlsplit(url).query
    if query.startswith("d="):
        path = unquote(query[2:])
    name = posixpath.basename(path)
    return name or None


def read_label_studio(
    source: JsonSource,
    model_version: str | None,
    *,
    kind: str,
    labels: Sequence[LabelSpec],
    gold: bool = False,
) -> Iterator[Candidate]:
    """Label Studio tasks: each prediction a candidate; as gold, each task's one annotation
    (a person's, as Label Studio exports them; cancelled ones left out). Task by task."""
    if source.shape() != "array":
        raise FormatError({"tasks": ["Label Studio tasks are a JSON list."]})
    fallback = (
        model_version.strip() if isinstance(model_version, str) and model_version.strip() else None
    )
    for i, task in enumerate(source.elements(None)):
        where = f"tasks[{i}]"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            key = "annotations" if gold else "predictions"
            raise FormatError({where: [f'A task is {{"data": {{"image": ...}}, "{key}": [...]}}.']})
        name = file_name_of(task["data"].get("image"))
        if name is None:
            raise FormatError({f"{where}.data.image": ["The task names no image file."]})
        if gold:
            yield _ls_gold(task, i, where, name)
            continue
        predictions = task.get("predictions", [])
        if not isinstance(predictions, list):
            raise FormatError({f"{where}.predictions": ["Give the predictions as a list."]})
        for k, pred in enumerate(predictions):
            spot = f"{where}.predictions[{k}]"
            if not isinstance(pred, dict) or not isinstance(pred.get("result"), list):
                raise FormatError(
                    {spot: ['A prediction is {"result": [...], "score"?, "model_version"?}.']}
                )
            raw_version = pred.get("model_version") or fallback
            if raw_version is None:
                raise FormatError(
                    {
                        f"{spot}.model_version": [
                            "The prediction names no model version; give model_version."
                        ]
                    }
                )
            cand = Candidate(
                index=i,
                where=spot,
                model_version=version_of(raw_version, f"{spot}.model_version"),
                file_name=name,
            )
            cand.score, problem = score_of(pred.get("score"))
            if problem:
                cand.fail(f"{spot}.score", problem)
            cand.raw_result = pred["result"]
            yield cand


def _ls_gold(task: Mapping[str, Any], index: int, where: str, name: str) -> Candidate:
    """A task's gold: its one annotation that was not cancelled. None, or several (Label
    Studio's own overlap), is the item's fault: gold is one answer, and which of several is
    right is the manager's call. Predictions are never taken as gold."""
    cand = Candidate(index=index, where=where, model_version="", file_name=name, scored=False)
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list) or not all(
        isinstance(a, dict) and isinstance(a.get("result"), list) for a in annotations
    ):
        raise FormatError({f"{where}.annotations": ['Annotations are [{"result": [...]}].']})
    kept = [a for a in annotations if not a.get("was_cancelled")]
    if not kept:
        cand.fail(
            f"{where}.annotations",
            "The task has no annotation to take as gold (predictions are not gold).",
        )
    elif len(kept) > 1:
        cand.fail(
            f"{where}.annotations",
            f"The task has {len(kept)} annotations; gold is one answer: keep the right one.",
        )
    else:
        cand.where = f"{where}.annotations[{annotations.index(kept[0])}]"
        cand.raw_result = kept[0]["result"]
    return cand


def ls_point_names(labels: Sequence[LabelSpec]) -> dict[str, tuple[str, int]]:
    """Keypoint projects: the Label Studio value of each keypoint -> (label, position). With
    one label the values are the keypoint names; with several, ``label:keypoint``."""
    out: dict[str, tuple[str, int]] = {}
    for spec in labels:
        for k, point in enumerate(spec.keypoints):
            value = point if len(labels) == 1 else f"{spec.name}:{point}"
            out[value] = (spec.name, k)
    return out


def label_config(
    kind: str, labels: Sequence[LabelSpec], colors: Mapping[str, str] | None = None
) -> str:
    """The Label Studio labelling config of a project: its image and one control tag of its
    kind (named ``label``, or ``choice`` for classification) listing its labels."""
    tag = LS_TAGS[kind]
    colors = colors or {}
    if kind == "classification":
        body = "".join(f"<Choice value={quoteattr(s.name)}/>" for s in labels)
        control = f'<Choices name="choice" toName="image" choice="single">{body}</Choices>'
    else:
        values = list(ls_point_names(labels)) if kind == "keypoints" else [s.name for s in labels]
        parts = []
        for value in values:
            color = colors.get(
                value.split(":")[0] if kind == "keypoints" and len(labels) > 1 else value
            )
            extra = f" background={quoteattr(color)}" if color else ""
            parts.append(f"<Label value={quoteattr(value)}{extra}/>")
        control = f'<{tag} name="label" toName="image">{"".join(parts)}</{tag}>'
    return f'<View><Image name="image" value="$image"/>{control}</View>'


def from_label_studio(
    result: Any,
    cand: Candidate,
    *,
    kind: str,
    labels: Sequence[LabelSpec],
    size: tuple[int, int],
) -> list[dict[str, Any]]:
    """Label Studio result regions (coordinates in percent of the image) as our items with
    scores, in pixels of an image of ``size`` (width, height). A region whose
    ``original_width/height`` has another aspect ratio is refused: the model saw another
    picture. Problems go to ``cand``."""
    if not isinstance(result, list):
        cand.fail(f"{cand.where}.result", "The result is a list of regions.")
        return []
    expected = LS_TYPES[kind]
    points = ls_point_names(labels) if kind == "keypoints" else {}
    items: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r, region in enumerate(result):
        where = f"{cand.where}.result[{r}]"
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            cand.fail(where, 'A region is {"type", "value": {...}}.')
            continue
        rtype, value = region.get("type"), region["value"]
        if rtype != expected:
            cand.fail(f"{where}.type", f"A {kind} project reads {expected} regions; got {rtype!r}.")
            continue
        score, problem = score_of(region.get("score", cand.score)) if cand.scored else (None, None)
        if problem:
            cand.fail(f"{where}.score", problem)
            continue
        names = value.get(rtype)
        if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
            cand.fail(f"{where}.value.{rtype}", "Give exactly one label per region.")
            continue
        name = names[0]
        scale = _scale(region, where, cand, size)
        if scale is None:
            continue
        sx, sy = scale
        if kind == "mask":
            rle = _brush_rle(region, value, where, cand, size)
            if rle is not None:
                items.append({"label": name, "score": score, "rle": rle})
        elif kind == "classification":
            items.append({"label": name, "score": score})
        elif kind == "bbox":
            nums = [_num(value.get(k)) for k in ("x", "y", "width", "height")]
            if any(v is None for v in nums):
                cand.fail(f"{where}.value", "A box has numeric x, y, width and height (percent).")
                continue
            turned = value.get("rotation")
            angle = 0.0 if turned is None else _num(turned)
            if angle is None:
                cand.fail(f"{where}.value.rotation", "A box's rotation is a number of degrees.")
                continue
            x, y, w, h = (float(v) for v in nums)  # type: ignore[arg-type]
            box = [x * sx, y * sy, w * sx, h * sy]
            items.append({"label": name, "score": score, "bbox": _upright(box, angle)})
        elif kind == "polygon":
            raw = value.get("points")
            if not isinstance(raw, list) or not all(
                isinstance(p, list)
                and len(p) == 2
                and _num(p[0]) is not None
                and _num(p[1]) is not None
                for p in raw
            ):
                cand.fail(
                    f"{where}.value.points", "A polygon's points are [[x, y], ...] in percent."
                )
                continue
            items.append(
                {"label": name, "score": score, "points": [[p[0] * sx, p[1] * sy] for p in raw]}
            )
        elif kind == "keypoints":
            if name not in points:
                cand.fail(
                    f"{where}.value.keypointlabels",
                    f"Unknown keypoint {name!r}; this project's are: {', '.join(points)}.",
                )
                continue
            px, py = _num(value.get("x")), _num(value.get("y"))
            if px is None or py is None:
                cand.fail(f"{where}.value", "A keypoint has numeric x and y (percent).")
                continue
            label, position = points[name]
            parent = str(region.get("parentID") or "")
            group = groups.get((label, parent))
            if group is None:
                spec = next(s for s in labels if s.name == label)
                group = {
                    "label": label,
                    "score": score,
                    "keypoints": [[0.0, 0.0, 0] for _ in spec.keypoints],
                }
                groups[(label, parent)] = group
                items.append(group)
            group["keypoints"][position] = [px * sx, py * sy, 2]
            if score is not None:
                group["score"] = score if group["score"] is None else min(group["score"], score)
    return items


def _upright(box: list[float], degrees: float) -> list[float]:
    """The axis-aligned box around a Label Studio box ``[x, y, width, height]`` (pixels)
    turned ``degrees`` clockwise on screen about its top-left corner, as Label Studio turns
    it: the box a worker would draw around a rectangular object seen at that angle."""
    x, y, w, h = box
    if not degrees % 360:
        return box
    turn = math.radians(degrees)
    cos, sin = math.cos(turn), math.sin(turn)
    # The corners (0, 0), (w, 0), (w, h) and (0, h), turned (y grows downwards).
    xs = [0.0, w * cos, w * cos - h * sin, -h * sin]
    ys = [0.0, w * sin, w * sin + h * cos, h * cos]
    left, top = x + min(xs), y + min(ys)
    return [left, top, x + max(xs) - left, y + max(ys) - top]


def _brush_rle(
    region: Mapping[str, Any],
    value: Mapping[str, Any],
    where: str,
    cand: Candidate,
    size: tuple[int, int],
) -> dict[str, Any] | None:
    """A brush region's mask (``tasks.ls_brush``) as our COCO RLE of the image's ``size``:
    decoded at the ``original_width/height`` the region gives, and scaled to the image's
    size (nearest pixel) when the backend saw it at another one."""
    import cv2
    from pycocotools import mask as coco_mask

    from tasks.ls_brush import BrushError, brush_mask

    if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
        cand.fail(f"{where}.value.rle", 'A brush region is {"format": "rle", "rle": [bytes]}.')
        return None
    width, height = size
    ow, oh = region.get("original_width", width), region.get("original_height", height)
    if not isinstance(ow, int) or not isinstance(oh, int) or ow * oh > 4 * width * height:
        cand.fail(where, "original_width and original_height are the mask's size in pixels.")
        return None
    try:
        mask = brush_mask(value["rle"], ow, oh)
    except BrushError as exc:
        cand.fail(f"{where}.value.rle", str(exc))
        return None
    if (ow, oh) != (width, height):
        resized = cv2.resize(
            mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
        )
        mask = resized > 0
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _scale(
    region: Mapping[str, Any], where: str, cand: Candidate, size: tuple[int, int]
) -> tuple[float, float] | None:
    """Pixels per percent along x and y."""
    ow, oh = region.get("original_width"), region.get("original_height")
    width, height = size
    if ow is not None or oh is not None:
        if _num(ow) is None or _num(oh) is None or not ow or not oh or ow <= 0 or oh <= 0:
            cand.fail(where, "original_width and original_height are positive numbers.")
            return None
        if abs((ow / oh) / (width / height) - 1) > ASPECT_TOLERANCE:
            cand.fail(
                where,
                f"The region is of a {ow:g}x{oh:g} image, but the image is {width}x{height}: "
                "the model saw another picture (rotated or cropped?).",
            )
            return None
    return width / 100.0, height / 100.0


def ls_name_variants(name: str) -> list[str]:
    """A Label Studio file name as given, then without its upload prefix."""
    stripped = _LS_UPLOAD_PREFIX.sub("", name)
    return [name] if stripped == name else [name, stripped]
