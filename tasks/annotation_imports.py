"""Objects per image read from files, matched to a project's images and checked as answers are:
what importing a model's predictions (``tasks.predictions``) and a manager's labelled images
as gold (``qa.services.gold_import``) share. The formats themselves are read by
``tasks.prediction_formats``; this module adds the project: its labels, its images (by id or
file name) and the validator of its kind.

Every problem is put on the candidate it belongs to (``Candidate.errors``, keyed by place), so
a caller can refuse the whole file (strict) or keep the good candidates and list the others.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from crowd.errors import InvalidInput
from crowd.json_stream import JsonSource, NotJson
from tasks import prediction_formats as fmt
from tasks.annotations import AnnotationError, validate_annotations
from tasks.models import Image, ImageStatus, Label, Project
from tasks.schema import project_schema

MAX_ERRORS_SHOWN = 200  # in a 400's errors; the detail gives the total


@dataclass(frozen=True)
class Checked:
    """A candidate that passed: its image, model version ("" for gold), its items as the
    validator normalised them (each with ``score`` unless gold) and the image's score."""

    image_id: int
    model_version: str
    items: list[dict[str, Any]]
    score: float | None


def label_specs(project: Project) -> list[fmt.LabelSpec]:
    return [
        fmt.LabelSpec(name=label.name, keypoints=tuple(label.keypoints))
        for label in Label.objects.filter(project=project).order_by("order", "id")
    ]


def candidates_read(
    project: Project,
    source: JsonSource,
    *,
    format_name: str | None,
    model_version: str | None = None,
    gold: bool = False,
) -> Iterable[fmt.Candidate]:
    """The candidates of a file of one of ``fmt.FORMATS`` (detected from its shape when not
    named), read as they are asked for (ours and Label Studio's one item at a time). A file
    that cannot be read as a whole is ``fmt.FormatError``, raised when its reading finds out
    (perhaps after some candidates), as is ``NotJson``."""
    name = format_name or fmt.detect(source, gold=gold)
    if name == "crowd":
        return fmt.read_crowd(source, model_version, gold=gold)
    specs = label_specs(project)
    if name == "coco":
        return fmt.read_coco(source, model_version, kind=project.kind, labels=specs, gold=gold)
    if name == "label_studio":
        return fmt.read_label_studio(
            source, model_version, kind=project.kind, labels=specs, gold=gold
        )
    raise fmt.FormatError({"format": [f"One of: {', '.join(fmt.FORMATS)}."]})


class ImageIndex:
    """The project's images by id and by file name (the whole name, else its last part when
    only one image has it). ``ready_only``: an image still being processed is named, but
    refused."""

    def __init__(self, project: Project, *, ready_only: bool = False) -> None:
        self.ready_only = ready_only
        rows = list(
            Image.objects.filter(project=project)
            .exclude(status=ImageStatus.FAILED)
            .values_list("pk", "name", "width", "height", "status")
        )
        self.status = {pk: status for pk, _, _, _, status in rows}
        self.by_id = {pk: (pk, w, h) for pk, _, w, h, _ in rows}
        self.by_name: dict[str, tuple[int, int, int]] = {}
        by_base: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for pk, name, w, h, _ in rows:
            self.by_name[name] = (pk, w, h)
            by_base[posixpath.basename(name)].append((pk, w, h))
        self.by_base = {k: v[0] for k, v in by_base.items() if len(v) == 1}

    def find(self, cand: fmt.Candidate) -> tuple[int, int, int] | None:
        """(id, width, height) of the candidate's image, or None with the reason on it."""
        found = self._lookup(cand)
        if found is not None and self.ready_only:
            status = self.status[found[0]]
            if status != ImageStatus.READY:
                cand.fail(
                    cand.where,
                    f"Image {found[0]} is {status}; gold can be set once it is ready.",
                )
                return None
        return found

    def _lookup(self, cand: fmt.Candidate) -> tuple[int, int, int] | None:
        if cand.image_id is not None:
            found = self.by_id.get(cand.image_id)
            if found is None:
                cand.fail(f"{cand.where}.image", f"No image {cand.image_id} in this project.")
            return found
        if cand.file_name is None:
            return None  # unreadable: the reader said why
        for name in fmt.ls_name_variants(cand.file_name):
            hit = self.by_name.get(name) or self.by_base.get(posixpath.basename(name))
            if hit is not None:
                return hit
        cand.fail(cand.where, f"No image named {cand.file_name!r} in this project.")
        return None


def candidate_clean(
    cand: fmt.Candidate, project: Project, specs: Sequence[fmt.LabelSpec], size: tuple[int, int]
) -> list[dict[str, Any]] | None:
    """The candidate's items checked like an answer of an image of ``size`` (width, height),
    each with its score (predictions) or with none (gold: the input's scores are dropped
    unread); None (with the problems in ``cand.errors``) when any is wrong."""
    if cand.raw_result is not None:
        cand.items = fmt.from_label_studio(
            cand.raw_result, cand, kind=project.kind, labels=specs, size=size
        )
    if cand.errors:
        return None
    scores: list[float | None] = []
    bare: list[Any] = []
    for k, item in enumerate(cand.items):
        if isinstance(item, dict):
            if cand.scored:
                score, problem = fmt.score_of(item.get("score", cand.score))
                if problem:
                    cand.fail(f"{cand.where}.annotations[{k}].score", problem)
                scores.append(score)
            bare.append({key: v for key, v in item.items() if key != "score"})
        else:
            scores.append(None)
            bare.append(item)
    if cand.errors:
        return None
    try:
        items = validate_annotations(
            bare, schema=project_schema(project), width=size[0], height=size[1]
        )
    except AnnotationError as exc:
        for key, messages in exc.errors.items():
            for message in messages:
                cand.fail(f"{cand.where}.{key}", message)
        return None
    if not cand.scored:
        return list(items)
    return [{**item, "score": score} for item, score in zip(items, scores, strict=True)]


class Checker:
    """Matches candidates to the project's images and checks their items, batch after batch
    of one input: an image given twice in it (for predictions: twice with one model version)
    is refused the second time. Keeps the bad candidates (their items let go) and counts all."""

    def __init__(self, project: Project, *, gold: bool = False) -> None:
        self.project = project
        self.gold = gold
        self.index = ImageIndex(project, ready_only=gold)
        self.specs = label_specs(project)
        self.seen: dict[tuple[int, str], str] = {}
        self.total = 0
        self.bad: list[fmt.Candidate] = []

    def check(self, candidates: Iterable[fmt.Candidate]) -> list[Checked]:
        """The good ones, in input order."""
        out: list[Checked] = []
        for cand in candidates:
            self.total += 1
            checked = self._one(cand)
            if checked is not None:
                out.append(checked)
            if cand.errors:
                cand.items, cand.raw_result = [], None
                self.bad.append(cand)
        return out

    def _one(self, cand: fmt.Candidate) -> Checked | None:
        found = self.index.find(cand)
        if found is None or (cand.errors and cand.raw_result is None):
            return None
        pk, width, height = found
        key = (pk, cand.model_version)
        if key in self.seen:
            what = "is given" if self.gold else "has a prediction of this version"
            cand.fail(cand.where, f"Image {pk} {what} at {self.seen[key]} too.")
            return None
        self.seen[key] = cand.where
        items = candidate_clean(cand, self.project, self.specs, (width, height))
        return None if items is None else Checked(pk, cand.model_version, items, cand.score)

    def failures_raise(self, *, what: str, code: str) -> None:
        """InvalidInput naming every bad candidate's problems by place (the first
        :data:`MAX_ERRORS_SHOWN` places), when any is bad. ``what``: the items' plural
        name."""
        if not self.bad:
            return
        errors: dict[str, list[str]] = {}
        for cand in self.bad:
            for where, messages in cand.errors.items():
                if len(errors) < MAX_ERRORS_SHOWN:
                    errors.setdefault(where, []).extend(messages)
        raise InvalidInput(
            f"{len(self.bad)} of the {self.total} {what} are not valid; nothing was stored. "
            "Fix them, or import with strict=false to store the valid ones.",
            code=code,
            errors=errors,
        )

    def rejected_json(self) -> list[dict[str, Any]]:
        """The bad candidates, each with its place in the input and its problems in one
        line."""
        return [
            {
                "index": c.index,
                "item": c.where,
                "error": "; ".join(f"{k}: {' '.join(v)}" for k, v in c.errors.items()),
            }
            for c in self.bad
        ]


def batched(candidates: Iterable[fmt.Candidate], size: int) -> Iterator[list[fmt.Candidate]]:
    """The candidates in lists of ``size``, as they are read."""
    batch: list[fmt.Candidate] = []
    for cand in candidates:
        batch.append(cand)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def unreadable(exc: fmt.FormatError | NotJson, *, what: str, code: str) -> InvalidInput:
    """The 400 of a file that cannot be read (``what``: "predictions file")."""
    if isinstance(exc, NotJson):
        return InvalidInput(
            "The file is not JSON; nothing was stored.",
            code=code,
            errors={"file": [f"Not JSON: {exc}"]},
        )
    return InvalidInput(
        f"The {what} cannot be read; nothing was stored.", code=code, errors=exc.errors
    )
