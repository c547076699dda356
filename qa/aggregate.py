"""``crowd-aggregate`` and ``manage.py aggregate``: the product's consensus on answers collected
elsewhere. No database, no Django.

Classification reads CSV ``task,worker,label`` and writes ``task,label,confidence,votes``.
Shapes (masks: ``{"label", "rle": {"size": [height, width], "counts"}}`` items, COCO
compressed RLE of the full image; ``--mask-mode semantic`` for answers that give each pixel
at most one label) read JSON Lines ``{"task", "worker", "annotations": [...], "width"?, "height"?,
"weight"?}`` and write ``{"task", "annotations": [... with "score", "num_votes"]}``, one line
per task in the order tasks first appear.

Exports from other platforms are large and not always clean, so:

- all shapes of the input are merged in one batched call, the worker model (bbox ``em``)
  learning from all of them;
- coordinates a few pixels past the image's edge (when width and height are given) are
  clipped into it and counted; ``--strict`` refuses them instead;
- a bad line is refused with its number and what is wrong, and nothing is written (the output
  goes to a temporary file beside it, renamed on success); ``--skip-invalid`` skips such lines
  and counts them;
- ``--report`` writes what the answers tell of each worker (the worker model when the merge
  has one, else their agreement with the consensus) and a summary.

The tool starts in a fraction of a second: numpy, scipy and the consensus modules are imported
only once the input has been read, and only the kind's own.
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import os
import sys
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import IO, TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol, TypeVar

import orjson

from qa.consensus import collector_paused
from tasks.annotations import MAX_ITEMS, AnnotationError, Schema, validate_annotations

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from qa.consensus.boxes import BoxColumns
    from qa.consensus.objects import Answer, MergedObject

    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.intp]

KINDS = ("classification", "bbox", "polygon", "keypoints", "mask")
MASK_MODES = ("instance", "semantic")
CLASSIFICATION_METHODS = ("auto", "majority_vote", "weighted_vote", "dawid_skene")
SHAPE_METHODS = ("auto", "merge", "em")
DEFAULT_QUORUM = 0.5
# Skipped lines named on stderr; the report lists them all.
SKIPPED_SHOWN = 20
# The progress bar moves every this many lines: often enough to see, rarely enough to cost
# nothing beside parsing them.
PROGRESS_LINES = 4096
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

KEY_TYPES = (str, int, float)
NUMBER_TYPES = (int, float)

T = TypeVar("T")


# Set by the console script, whose process ends with the command: the parsed input and the
# merge are kept here rather than freed object by object (see :func:`console_main`).
_left_to_exit: list[Any] | None = None


class AggregateError(Exception):
    """Options or input the tool refuses; the message says what and, for input, on which
    line. The console script exits with status 2, ``manage.py`` raises ``CommandError``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``crowd-aggregate``, shared by ``manage.py aggregate``."""
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument(
        "--method",
        default="auto",
        help="classification: auto (Dawid-Skene from 200 answers on, majority vote "
        "before), majority_vote, dawid_skene; shapes: auto (em unless --quorum is given), "
        "merge (a fixed --quorum, 0.5 by default), em "
        "(a model of each worker learnt by EM over the whole input)",
    )
    parser.add_argument("--input", required=True, help="file to read, - for stdin")
    parser.add_argument("--output", required=True, help="file to write, - for stdout")
    parser.add_argument("--iou-threshold", type=float, default=0.5)
    parser.add_argument(
        "--quorum",
        type=float,
        default=None,
        help="keep an object marked by at least this weighted share of the answers "
        "(fixed-quorum merge; 0.5 when not given)",
    )
    parser.add_argument(
        "--keypoint-sigma", type=float, default=0.05, help="OKS sigma of non-COCO keypoints"
    )
    parser.add_argument(
        "--keypoint-names",
        default="",
        help="comma-separated keypoint names in order (COCO names get COCO sigmas)",
    )
    parser.add_argument(
        "--mask-mode",
        default="instance",
        choices=MASK_MODES,
        help="masks: instance (any number a label, merged object by object) or semantic (each "
        "pixel at most one label, merged by a per-pixel vote)",
    )
    parser.add_argument(
        "--report",
        default=None,
        metavar="FILE",
        help="write JSON with each worker's estimated parameters (or agreement with the "
        "consensus) and a summary of the input",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse coordinates past the image's edge instead of clipping them",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad lines (counted, and listed in the report) instead of refusing the input",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on stderr but errors")


@dataclass(frozen=True)
class Settings:
    """One run's options, checked (see :func:`add_arguments`)."""

    kind: str
    input: str
    output: str
    method: str = "auto"
    iou_threshold: float = 0.5
    quorum: float | None = None
    keypoint_sigma: float = 0.05
    keypoint_names: tuple[str, ...] = ()
    mask_mode: str = "instance"
    report: str | None = None
    strict: bool = False
    skip_invalid: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        names = tuple(n.strip() for n in (options.get("keypoint_names") or "").split(","))
        settings = cls(
            kind=options["kind"],
            input=options["input"],
            output=options["output"],
            method=options.get("method") or "auto",
            iou_threshold=float(options.get("iou_threshold", 0.5)),
            quorum=options.get("quorum"),
            keypoint_sigma=float(options.get("keypoint_sigma", 0.05)),
            keypoint_names=tuple(n for n in names if n),
            mask_mode=options.get("mask_mode") or "instance",
            report=options.get("report"),
            strict=bool(options.get("strict")),
            skip_invalid=bool(options.get("skip_invalid")),
        )
        settings.check()
        return settings

    def check(self) -> None:
        quorum = self.quorum
        if not 0 < self.iou_threshold <= 1 or not (quorum is None or 0 < quorum <= 1):
            raise AggregateError("--iou-threshold and --quorum must be in (0, 1].")
        if self.kind not in KINDS:
            raise AggregateError(f"--kind: one of {', '.join(KINDS)}.")
        if self.kind == "classification":
            if self.method not in CLASSIFICATION_METHODS:
                raise AggregateError(
                    f"--method for classification: {', '.join(CLASSIFICATION_METHODS)}."
                )
            return
        if self.method not in SHAPE_METHODS:
            raise AggregateError("--method for shapes: auto, merge, em.")
        if self.method == "em" and quorum is not None:
            raise AggregateError("--method em has no quorum; leave --quorum out.")
        if self.mask_mode not in MASK_MODES:
            raise AggregateError(f"--mask-mode: one of {', '.join(MASK_MODES)}.")
        if (
            self.kind == "mask"
            and self.mask_mode == "semantic"
            and (self.method == "merge" or quorum is not None)
        ):
            raise AggregateError(
                "Semantic masks are merged by a per-pixel vote, which has no quorum; leave "
                "--quorum and --method merge out."
            )

    @property
    def shape_quorum(self) -> float:
        return DEFAULT_QUORUM if self.quorum is None else float(self.quorum)

    @property
    def box_method(self) -> str:
        """Shapes: the worker model unless a fixed quorum is asked for."""
        return "quorum" if self.method == "merge" or self.quorum is not None else "em"


# The console: messages and progress on stderr


class Bar(Protocol):
    def update(self, n: float = 1) -> Any: ...

    def close(self) -> None: ...


class _NoBar:
    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Console:
    """Where the tool speaks: ``write`` takes whole lines. ``quiet`` leaves errors only;
    progress bars show on a terminal (after half a second, so a small input shows none) or
    always with ``progress=True``."""

    def __init__(
        self, write: Callable[[str], object], *, quiet: bool = False, progress: bool | None = None
    ) -> None:
        self.write = write
        self.quiet = quiet
        self.forced = bool(progress)
        self.progress = not quiet and (self.forced or (progress is None and _is_terminal()))

    def say(self, text: str) -> None:
        if not self.quiet:
            self.write(text if text.endswith("\n") else text + "\n")

    def bar(self, desc: str, *, total: float | None = None, unit: str = "it") -> Bar:
        if not self.progress:
            return _NoBar()
        from tqdm import tqdm  # type: ignore[import-untyped]  # only when shown: it costs a tenth of the start-up

        bar: Bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit == "B",
            file=sys.stderr,
            leave=False,
            delay=0 if self.forced else 0.5,
        )
        return bar

    def track(self, items: Sequence[T], desc: str, unit: str) -> Iterator[T]:
        bar = self.bar(desc, total=len(items), unit=unit)
        try:
            for item in items:
                yield item
                bar.update()
        finally:
            bar.close()


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# What a run found


@dataclass(frozen=True)
class Issue:
    line: int
    error: str

    def __str__(self) -> str:
        return f"Line {self.line}: {self.error}"


@dataclass
class Summary:
    """What a run read and wrote: tasks written, answers used and their workers, objects with a
    coordinate clipped into the image, lines skipped (each with its reason)."""

    kind: str
    method: str = ""
    tasks: int = 0
    answers: int = 0
    workers: int = 0
    clipped: int = 0
    skipped: list[Issue] = field(default_factory=list)

    def text(self) -> str:
        out = (
            f"{_count(self.tasks, 'task')} aggregated ({_count(self.answers, 'answer')} of "
            f"{_count(self.workers, 'worker')}"
        )
        if self.kind != "classification":
            out += f"; {_count(self.clipped, 'object')} clipped into the image"
        out += ")."
        if self.skipped:
            shown = ", ".join(str(issue.line) for issue in self.skipped[:SKIPPED_SHOWN])
            out += f"\n{_count(len(self.skipped), 'invalid line')} skipped: "
            if len(self.skipped) > SKIPPED_SHOWN:
                out += f"the first {SKIPPED_SHOWN} are {shown} (the report lists them all)."
            else:
                out += f"{'line' if len(self.skipped) == 1 else 'lines'} {shown}."
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "answers": self.answers,
            "workers": self.workers,
            "clipped_objects": self.clipped,
            "skipped_lines": len(self.skipped),
        }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class _Issues:
    """Bad lines as they are found. Without ``skip`` the input is refused, naming the first bad
    line; reading may stop at the first one found, since no later line can come before it."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.found: list[Issue] = []

        self.first_line = math.inf

    def add(self, line: int, error: str) -> None:
        self.found.append(Issue(line, error))
        self.first_line = min(self.first_line, line)

    def settle(self) -> list[Issue]:
        """The skipped lines in order, or the refusal of the first bad line."""
        self.found.sort(key=lambda issue: issue.line)
        if self.found and not self.skip:
            raise AggregateError(f"{self.found[0]} (--skip-invalid skips such lines.)")
        return self.found


# The run


def run(settings: Settings, console: Console) -> Summary:
    """Aggregate ``settings.input`` into ``settings.output`` (and the report); the summary is
    said on the console. Raises :class:`AggregateError`, with nothing written, on bad input."""
    settings.check()
    # Parsed JSON is millions of small objects that never form cycles: with the collector on,
    # each generation's pass walks all of them again and again, which doubles the time taken
    # to read a large input.
    with collector_paused(), _source(settings.input) as (handle, size):
        targets = [_Target(settings.output)]
        if settings.report:
            targets.append(_Target(settings.report))
        try:
            if settings.kind == "classification":
                summary, workers = _classify(handle, size, targets[0].handle, settings, console)
            else:
                summary, workers = _shapes(handle, size, targets[0].handle, settings, console)
            if settings.report:
                report = {
                    "kind": settings.kind,
                    "method": summary.method,
                    "summary": summary.as_json(),
                    **workers,
                    "skipped": [{"line": i.line, "error": i.error} for i in summary.skipped],
                }
                targets[1].handle.write(
                    orjson.dumps(
                        report, option=JSON_OPTIONS | orjson.OPT_INDENT_2, default=_jsonable
                    )
                )
            for target in targets:
                target.commit()
        finally:
            for target in targets:
                target.discard()
    console.say(summary.text())
    return summary


@contextmanager
def _source(path: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """The input as bytes, and its size when known (for the progress bar)."""
    if path == "-":
        yield sys.stdin.buffer, None
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise AggregateError(f"Cannot open {path}: {exc.strerror}.") from None
    with handle:
        stat = os.fstat(handle.fileno())
        yield handle, stat.st_size if stat.st_size else None


class _Target:
    """A file written whole or not at all: a temporary file beside it, renamed over it by
    :meth:`commit`; ``-`` is stdout, written on commit only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.temporary: str | None = None
        self.done = False
        if path == "-":
            self.handle: IO[bytes] = io.BytesIO()
            return
        import tempfile

        folder, name = os.path.split(os.path.abspath(path))
        try:
            descriptor, self.temporary = tempfile.mkstemp(
                dir=folder, prefix=f".{name}.", suffix=".part"
            )
        except OSError as exc:
            raise AggregateError(f"Cannot open {path}: {exc.strerror}.") from None
        self.handle = os.fdopen(descriptor, "wb")

    def commit(self) -> None:
        if self.temporary is None:
            stdout = getattr(sys.stdout, "buffer", None)
            data = self.handle.getvalue()  # type: ignore[attr-defined]
            if stdout is not None:
                sys.stdout.flush()
                stdout.write(data)
                stdout.flush()
            else:
                sys.stdout.write(data.decode("utf-8"))
            self.done = True
            return
        self.handle.close()
        # mkstemp makes the file private; the output gets the mode a new file would have.
        os.chmod(self.temporary, 0o666 & ~_umask())
        os.replace(self.temporary, self.path)
        self.done = True

    def discard(self) -> None:
        self.handle.close()
        if self.temporary is not None and not self.done:
            with suppress(FileNotFoundError):
                os.unlink(self.temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _lines(handle: IO[bytes], bar: Bar) -> Iterator[bytes]:
    pending = 0
    for count, raw in enumerate(handle, start=1):
        pending += len(raw)
        if count % PROGRESS_LINES == 0:
            bar.update(pending)
            pending = 0
        yield raw
    bar.update(pending)


def _jsonable(value: Any) -> Any:
    """What orjson cannot write alone: numpy arrays of any layout and numpy scalars."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# Classification


def _classify(
    handle: IO[bytes],
    size: int | None,
    target: IO[bytes],
    settings: Settings,
    console: Console,
) -> tuple[Summary, dict[str, Any]]:
    import csv

    issues = _Issues(settings.skip_invalid)
    bar = console.bar("reading", total=size, unit="B")
    try:
        reader = csv.DictReader(_text_lines(_lines(handle, bar)))
        if not reader.fieldnames or not {"task", "worker", "label"} <= set(reader.fieldnames):
            found = ",".join(reader.fieldnames or []) or "nothing"
            raise AggregateError(
                "The CSV's first line must name its columns: task,worker,label (in any order, "
                f"other columns ignored); it has {found}."
            )
        rows: list[tuple[str, str, str]] = []
        for row in reader:
            task, worker, label = row["task"], row["worker"], row["label"]
            if not task or not worker or label in (None, ""):
                issues.add(reader.line_num, "task, worker and label must all be given.")
                if not settings.skip_invalid:
                    break
                continue
            rows.append((task, worker, label))
    finally:
        bar.close()
    skipped = issues.settle()
    if not rows:
        raise AggregateError("No answers in the input.")

    from qa.consensus import classification as cls

    if settings.method == "dawid_skene" and len(rows) < cls.MIN_ANSWERS_FOR_DS:
        console.say(
            f"Dawid-Skene on {len(rows)} answers: too few to learn each worker's confusion, so "
            "its confidences are overstated; --method auto uses majority vote below "
            f"{cls.MIN_ANSWERS_FOR_DS}."
        )
    answers, tasks, workers, labels = cls.encode(rows)
    result = cls.aggregate(answers, method=settings.method)  # type: ignore[arg-type]
    text = io.TextIOWrapper(target, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["task", "label", "confidence", "votes"])
    chosen = result.label.tolist()
    confidence, votes = result.confidence.tolist(), result.votes.tolist()
    writer.writerows(
        [task, labels[chosen[i]], f"{confidence[i]:.6f}", votes[i]] for i, task in enumerate(tasks)
    )
    text.flush()
    text.detach()
    summary = Summary(
        kind="classification",
        method=result.method,
        tasks=len(tasks),
        answers=answers.n_answers,
        workers=len(workers),
        skipped=skipped,
    )
    return summary, _label_workers(answers, result, workers, labels)


def _text_lines(lines: Iterable[bytes]) -> Iterator[str]:
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AggregateError(f"Line {number}: not UTF-8 text.") from None
        yield text.removeprefix("\ufeff") if number == 1 else text


def _label_workers(
    answers: Any, result: Any, workers: list[Hashable], labels: list[Hashable]
) -> dict[str, Any]:
    """Per worker: answers, the share that agree with the consensus and, from Dawid-Skene,
    their confusion matrix (rows the true label, columns the label given) and accuracy (the
    chance they give the true label to a task whose label follows the class priors)."""
    import numpy as np

    agree = result.label[answers.task] == answers.label
    count = np.bincount(answers.worker, minlength=answers.n_workers)
    agreed = np.bincount(answers.worker, weights=agree, minlength=answers.n_workers)
    out: list[dict[str, Any]] = []
    confusion = result.worker_confusion
    accuracy = None
    if confusion is not None and result.priors is not None:
        accuracy = np.einsum("wcc->wc", confusion) @ result.priors
    for w, worker in enumerate(workers):
        entry: dict[str, Any] = {
            "worker": worker,
            "answers": int(count[w]),
            "agreement": float(agreed[w] / count[w]) if count[w] else None,
        }
        if confusion is not None and accuracy is not None:
            entry["accuracy"] = float(accuracy[w])
            entry["confusion"] = confusion[w].tolist()
        out.append(entry)
    return {"labels": labels, "workers": out}


# Shapes


@dataclass
class _Crowds:
    """The valid answers, grouped by task in order of first appearance: boxes as columns,
    other shapes as answers."""

    tasks: list[Any] = field(default_factory=list)
    crowds: list[list[Answer]] = field(default_factory=list)
    columns: BoxColumns | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)
    schema: Schema = field(default_factory=lambda: Schema(kind="", keypoints={}))
    clipped: int = 0


Row = tuple[int, dict[str, Any]]


def _shapes(
    handle: IO[bytes],
    size: int | None,
    target: IO[bytes],
    settings: Settings,
    console: Console,
) -> tuple[Summary, dict[str, Any]]:
    issues = _Issues(settings.skip_invalid)
    by_task = _read_rows(handle, size, issues, console)
    found = _check(by_task, settings, issues, console)
    if _left_to_exit is not None:
        _left_to_exit.append(by_task)
    del by_task
    skipped = issues.settle()
    merged, method, model = _merge(found, settings)
    dumps, option = orjson.dumps, JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE
    for task, objects in zip(found.tasks, merged, strict=True):
        line = {"task": task, "annotations": [o.to_item() for o in objects]}
        target.write(dumps(line, option=option, default=_jsonable))
    if _left_to_exit is not None:
        _left_to_exit.append((found, merged))
    if found.columns is not None:
        workers = found.columns.workers
    else:
        workers = [answer.worker for crowd in found.crowds for answer in crowd]
    summary = Summary(
        kind=settings.kind,
        method=method,
        tasks=len(found.tasks),
        answers=len(workers),
        workers=len(set(workers)),
        clipped=found.clipped,
        skipped=skipped,
    )
    report: dict[str, Any] = {}
    if settings.report:
        report = {"workers": _shape_workers(found, merged, model)}
    return summary, report


def _read_rows(
    handle: IO[bytes], size: int | None, issues: _Issues, console: Console
) -> dict[Any, list[Row]]:
    """Each line parsed and its fields checked, grouped by task; annotations are checked
    later, against their task's image."""
    by_task: dict[Any, list[Row]] = {}
    loads = orjson.loads
    bar = console.bar("reading", total=size, unit="B")
    done = shown = 0
    try:
        for line, raw in enumerate(handle, start=1):
            done += len(raw)
            if line % PROGRESS_LINES == 0:
                bar.update(done - shown)
                shown = done
            if not raw.strip():
                continue
            try:
                row = loads(raw)
            except orjson.JSONDecodeError as exc:
                issues.add(line, f"not JSON ({exc.msg}).")
            else:
                error = _row_error(row)
                if error is None:
                    task = row["task"]
                    rows = by_task.get(task)
                    if rows is None:
                        by_task[task] = [(line, row)]
                    else:
                        rows.append((line, row))
                    continue
                issues.add(line, error)
            if not issues.skip:
                break
        bar.update(done - shown)
    finally:
        bar.close()
    return by_task


def _row_error(row: Any) -> str | None:
    """What is wrong with a parsed line, beside its annotations; None when nothing is.
    (Exact type tests: JSON gives exactly these types, and ``true`` is no number here.)"""
    if type(row) is not dict or "task" not in row or "worker" not in row:
        return 'each line is {"task", "worker", "annotations"}.'
    if type(row["task"]) not in KEY_TYPES:
        return "task must be a string or a number."
    if type(row["worker"]) not in KEY_TYPES:
        return "worker must be a string or a number."
    if type(row.get("annotations")) is not list:
        return "annotations must be a list."
    weight = row.get("weight", 1.0)
    if type(weight) not in NUMBER_TYPES or not 0 < weight <= 1:
        return "weight must be a number in (0, 1]."
    width, height = row.get("width"), row.get("height")
    if (width is not None or height is not None) and not (
        type(width) is int and type(height) is int and width > 0 and height > 0
    ):
        return "width and height must be positive integers."
    return None


def _check(
    by_task: dict[Any, list[Row]], settings: Settings, issues: _Issues, console: Console
) -> _Crowds:
    """Every answer validated (and clipped) against its task's image and the labels seen."""
    from qa.consensus.objects import Answer

    sizes = [_size(rows) for rows in by_task.values()]
    if settings.kind == "bbox":
        return _check_boxes(by_task, sizes, settings, issues, console)
    schema = _schema(by_task, settings)
    out = _Crowds(schema=schema)
    tasks = list(zip(by_task.items(), sizes, strict=True))
    for (task, rows), (width, height) in console.track(tasks, "checking", "tasks"):
        if not issues.skip and rows[0][0] > issues.first_line:
            break  # tasks come in order of their first line: none left can hold an earlier one
        crowd: list[Answer] = []
        for line, row in rows:
            items = _checked(line, row, schema, width, height, settings.strict, issues, out)
            if items is not None:
                crowd.append(Answer(row["worker"], float(row.get("weight", 1.0)), items))
        if crowd:
            out.tasks.append(task)
            out.crowds.append(crowd)
            out.sizes.append((width, height))
    return out


def _checked(
    line: int,
    row: dict[str, Any],
    schema: Schema,
    width: int,
    height: int,
    strict: bool,
    issues: _Issues,
    out: _Crowds,
) -> list[dict[str, Any]] | None:
    """One answer's items by the full check (clipped ones counted in ``out``); None, with the
    issue noted, when it is refused."""
    try:
        items = validate_annotations(row["annotations"], schema=schema, width=width, height=height)
    except AnnotationError as exc:
        issues.add(line, str(exc))
        return None
    if items.clipped:
        if strict:
            issues.add(line, _past_edge(row["annotations"], schema, width, height))
            return None
        out.clipped += items.clipped
    return list(items)


def _check_boxes(
    by_task: dict[Any, list[Row]],
    sizes: list[tuple[int, int]],
    settings: Settings,
    issues: _Issues,
    console: Console,
) -> _Crowds:
    """:func:`_check` for boxes, which come by the million: those plainly inside their image
    go from the parsed lines to columns in array operations (:func:`plain_boxes`), the rest
    through the full check; the merge reads the columns, with no object per box."""
    import numpy as np

    from qa.consensus.boxes import BoxColumns, ragged_arange

    n_rows = list(map(len, by_task.values()))
    found = plain_boxes(
        [row["annotations"] for rows in by_task.values() for _, row in rows],
        [size for size, n in zip(sizes, n_rows, strict=True) for _ in range(n)],
    )
    schema = Schema(kind="bbox", keypoints=dict.fromkeys(found.names, ()))
    ids = {name: i for i, name in enumerate(found.names)}
    out = _Crowds(schema=schema)
    # Each kept answer's boxes: a run of rows of the plain columns, or of the fully checked
    # boxes appended after them.
    starts = np.cumsum([0, *found.counts[:-1]]).tolist() if found.counts else []
    start: list[int] = []
    count: list[int] = []
    workers: list[Any] = []
    weights: list[float] = []
    per_image: list[int] = []
    extra_boxes: list[list[float]] = []
    extra_labels: list[int] = []
    base = len(found.boxes)
    answer = -1
    tasks = list(zip(by_task.items(), sizes, strict=True))
    for (task, rows), (width, height) in console.track(tasks, "checking", "tasks"):
        if not issues.skip and rows[0][0] > issues.first_line:
            break  # tasks come in order of their first line: none left can hold an earlier one
        kept = 0
        for line, row in rows:
            answer += 1
            if found.plain[answer]:
                start.append(starts[answer])
                count.append(found.counts[answer])
            else:
                items = _checked(line, row, schema, width, height, settings.strict, issues, out)
                if items is None:
                    continue
                start.append(base + len(extra_boxes))
                count.append(len(items))
                extra_boxes += [item["bbox"] for item in items]
                extra_labels += [ids[item["label"]] for item in items]
            workers.append(row["worker"])
            weights.append(float(row.get("weight", 1.0)))
            kept += 1
        if kept:
            out.tasks.append(task)
            out.sizes.append((width, height))
            per_image.append(kept)
    counts = np.array(count, dtype=np.intp)
    rows_taken = np.repeat(np.array(start, dtype=np.intp), counts) + ragged_arange(counts)
    out.columns = BoxColumns(
        answers_per_image=np.array(per_image, dtype=np.intp),
        workers=workers,
        weights=np.array(weights, dtype=np.float64),
        boxes_per_answer=counts,
        boxes=np.concatenate([found.boxes, np.array(extra_boxes).reshape(-1, 4)])[rows_taken],
        label=np.concatenate([found.label, np.array(extra_labels, dtype=np.intp)])[rows_taken],
        label_names=found.names,
    )
    return out


class PlainBoxes(NamedTuple):
    """:func:`plain_boxes`' answer: every box of the input as columns, and which answers hold
    only plainly valid boxes."""

    boxes: FloatArray  # (n_boxes, 4) x, y, w, h as the full check leaves them; nan if unread
    label: IntArray  # per box, an index into ``names``; -1 for a label that is no string
    names: list[str]  # every string label seen, in order of first sight
    counts: list[int]  # boxes per answer
    plain: list[bool]  # per answer: all its boxes plainly valid, no full check needed

    def items(self, answer: int) -> list[dict[str, Any]] | None:
        """A plain answer's items as :func:`tasks.annotations.validate_annotations` returns
        them; None for an answer left to the full check."""
        if not self.plain[answer]:
            return None
        start = sum(self.counts[:answer])
        end = start + self.counts[answer]
        return [
            {"label": self.names[label], "bbox": box}
            for label, box in zip(
                self.label[start:end].tolist(), self.boxes[start:end].tolist(), strict=True
            )
        ]


def plain_boxes(answers: Sequence[list[Any]], sizes: Sequence[tuple[int, int]]) -> PlainBoxes:
    """Every box of the answers (``answers[k]`` on an image of ``sizes[k]``, width and height)
    as columns, and which answers are plainly valid: every box a string label, four numbers, a
    positive width and height, inside the image. For those, the columns hold exactly what
    :func:`tasks.annotations.validate_annotations` returns; the others need the full check (an
    error to name, a coordinate to clip). Array operations over all boxes at once, no call
    and no object per box."""
    import numpy as np

    counts = list(map(len, answers))
    items = list(chain.from_iterable(answers))
    try:
        labels = list(map(itemgetter("label"), items))
        boxes = list(map(itemgetter("bbox"), items))
    except (KeyError, TypeError, IndexError):  # an item that is not an object, or lacks a key
        labels = [i.get("label") if type(i) is dict else None for i in items]
        boxes = [i.get("bbox") if type(i) is dict else None for i in items]
    # The common case, every item well formed, is told by C-level passes; otherwise item by item.
    if set(map(type, labels)) <= {str} and set(map(type, boxes)) <= {list}:
        good = [True] * len(items) if set(map(len, boxes)) <= {4} else list(map(_four, boxes))
    else:
        good = [
            type(label) is str and type(box) is list and len(box) == 4
            for label, box in zip(labels, boxes, strict=True)
        ]
    every = all(good)
    names = _labels(labels)
    ids = {name: i for i, name in enumerate(names)}
    if every:
        label = np.fromiter(map(ids.__getitem__, labels), dtype=np.intp, count=len(labels))
    else:
        label = np.array([ids.get(n, -1) if type(n) is str else -1 for n in labels], dtype=np.intp)
    flat = list(chain.from_iterable(boxes if every else map(_box_or_nan, boxes, good)))
    if not set(map(type, flat)) <= {int, float}:
        flat = [v if type(v) in NUMBER_TYPES else math.nan for v in flat]
    try:
        values = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(-1, 4)
    except OverflowError:  # an integer too large for a float: the full check says so
        values = np.full((len(items), 4), np.nan)
        return PlainBoxes(values, label, names, counts, [False] * len(answers))
    x, y, w, h = values.T
    # The same arithmetic as the full check (edges first, then sides), so the result is the
    # same to the last bit.
    right, bottom = x + w, y + h
    size = np.repeat(np.array(sizes, dtype=np.float64).reshape(-1, 2), counts, axis=0)
    with np.errstate(invalid="ignore"):
        inside = (
            (True if every else np.fromiter(good, dtype=bool, count=len(good)))
            & (w > 0) & (h > 0) & (x >= 0) & (y >= 0)
            & (right <= size[:, 0]) & (bottom <= size[:, 1]) & (right > x) & (bottom > y)
        )  # fmt: skip
    normal = np.stack([x, y, right - x, bottom - y], axis=1)
    answer_of = np.repeat(np.arange(len(answers)), counts)
    flawed = np.bincount(answer_of[~inside], minlength=len(answers)).tolist()
    plain = [not bad and n <= MAX_ITEMS for n, bad in zip(counts, flawed, strict=True)]
    return PlainBoxes(normal, label, names, counts, plain)


_NOT_A_BOX = (math.nan,) * 4


def _box_or_nan(box: Any, good: bool) -> Any:
    return box if good else _NOT_A_BOX


def _four(box: list[Any]) -> bool:
    return len(box) == 4


def _labels(labels: list[Any]) -> list[str]:
    """The string labels among ``labels``, in order of first sight."""
    try:
        distinct = dict.fromkeys(labels)
    except TypeError:  # a label that is a list or an object
        distinct = dict.fromkeys(label for label in labels if type(label) is str)
    return [label for label in distinct if type(label) is str]


def _past_edge(items: list[Any], schema: Schema, width: int, height: int) -> str:
    index = next(
        i
        for i, item in enumerate(items)
        if validate_annotations([item], schema=schema, width=width, height=height).clipped
    )
    return (
        f"annotations[{index}] reaches past the edge of the {width}x{height} image "
        "(--strict refuses what would otherwise be clipped to it)."
    )


def _size(rows: list[Row]) -> tuple[int, int]:
    """The image size given with the answers, or the extent of everything marked."""
    sizes = {(row["width"], row["height"]) for _, row in rows if row.get("width")}
    if sizes:
        return max(sizes, key=lambda s: s[0] * s[1])
    # A mask carries its image's size; a mask of another size than the rest is refused by
    # the check, by its line.
    for _, row in rows:
        for item in row["annotations"]:
            size = _mask_size(item)
            if size is not None:
                return size
    x, y = 0.0, 0.0
    for _, row in rows:
        for item in row["annotations"]:
            for px, py in _points(item):
                if math.isfinite(px) and math.isfinite(py):
                    x, y = max(x, px), max(y, py)
    return math.ceil(x) + 1, math.ceil(y) + 1


def _mask_size(item: Any) -> tuple[int, int] | None:
    """(width, height) of a mask item's RLE, when it reads as one."""
    rle = item.get("rle") if isinstance(item, dict) else None
    size = rle.get("size") if isinstance(rle, dict) else None
    if isinstance(size, list) and len(size) == 2 and all(type(v) is int and v > 0 for v in size):
        return size[1], size[0]
    return None


def _points(item: Any) -> list[tuple[float, float]]:
    if not isinstance(item, dict):
        return []
    try:
        if "bbox" in item:
            x, y, w, h = (float(v) for v in item["bbox"])
            return [(x + w, y + h)]
        if "points" in item:
            return [(float(p[0]), float(p[1])) for p in item["points"]]
        if "keypoints" in item:
            return [(float(p[0]), float(p[1])) for p in item["keypoints"]]
    except (TypeError, ValueError, IndexError):
        return []  # validation reports it
    return []


def _schema(by_task: dict[Any, list[Row]], settings: Settings) -> Schema:
    """The labels of the input; for keypoints, each label's keypoints: ``--keypoint-names``,
    or as many as its first instance in the input has (a label fixes its keypoints)."""
    counts: dict[str, int] = {}
    for rows in by_task.values():
        for _, row in rows:
            for item in row["annotations"]:
                if isinstance(item, dict) and isinstance(item.get("label"), str):
                    points = item.get("keypoints")
                    counts.setdefault(item["label"], len(points) if isinstance(points, list) else 0)
    if settings.kind != "keypoints":
        return Schema(
            kind=settings.kind,
            keypoints={label: [] for label in counts},
            mask_mode=settings.mask_mode,
        )
    names = list(settings.keypoint_names)
    return Schema(
        kind="keypoints",
        keypoints={label: names or [f"k{i}" for i in range(n)] for label, n in counts.items()},
    )


def _merge(
    found: _Crowds, settings: Settings
) -> tuple[list[list[MergedObject]], str, dict[Hashable, Any]]:
    """Each task's merged objects, the method that merged them, and (for the report) the
    worker model the merge learnt, if any: all images in one batched call, so the per-image
    cost of the array machinery is paid once."""
    threshold, quorum = settings.iou_threshold, settings.shape_quorum
    if settings.kind == "bbox":
        from qa.consensus.boxes import box_model, merge_boxes_batch

        method = settings.box_method
        boxes = found.columns
        assert boxes is not None  # boxes are checked into columns
        if method == "em" and settings.report:
            # The model merge_boxes_batch would learn, learnt once and handed to it: the
            # report gets its parameters without a second EM over the input.
            model = box_model(boxes, iou_threshold=threshold)
            merged = merge_boxes_batch(boxes, iou_threshold=threshold, method="em", model=model)
            return merged, method, model.workers()
        merged = merge_boxes_batch(
            boxes,
            iou_threshold=threshold,
            quorum=quorum,
            method=method,  # type: ignore[arg-type]
        )
        return merged, method, {}
    method = settings.box_method  # the worker model unless a fixed quorum is asked for
    if settings.kind == "polygon":
        from qa.consensus.polygons import merge_polygons_batch, polygon_model

        if method == "em":
            polygons = polygon_model(found.crowds, found.sizes, iou_threshold=threshold)
            merged = merge_polygons_batch(
                found.crowds, found.sizes, iou_threshold=threshold, model=polygons
            )
            return merged, method, dict(polygons.workers)
        merged = merge_polygons_batch(
            found.crowds, found.sizes, iou_threshold=threshold, method="quorum", quorum=quorum
        )
        return merged, "quorum", {}
    if settings.kind == "mask":
        return _merge_masks(found, settings, method)
    from qa.consensus.keypoints import keypoint_model, merge_keypoints_batch
    from qa.geometry import keypoint_sigmas

    sigmas = {
        label: keypoint_sigmas(names, default=settings.keypoint_sigma)
        for label, names in found.schema.keypoints.items()
    }
    if method == "em":
        people = keypoint_model(found.crowds, sigmas=sigmas, oks_threshold=threshold)
        merged = merge_keypoints_batch(
            found.crowds, sigmas=sigmas, oks_threshold=threshold, method="em", model=people
        )
        return merged, method, dict(people.workers)
    merged = merge_keypoints_batch(
        found.crowds, sigmas=sigmas, oks_threshold=threshold, method="quorum", quorum=quorum
    )
    return merged, "quorum", {}


def _merge_masks(
    found: _Crowds, settings: Settings, method: str
) -> tuple[list[list[MergedObject]], str, dict[Hashable, Any]]:
    from qa.consensus import masks

    threshold = settings.iou_threshold
    if settings.mask_mode == "semantic":
        pixels = masks.semantic_model(found.crowds, found.sizes)
        merged = masks.merge_semantic_batch(found.crowds, found.sizes, model=pixels)
        return merged, "pixel_vote", dict(pixels.workers)
    if method == "em":
        model = masks.mask_model(found.crowds, found.sizes, iou_threshold=threshold)
        merged = masks.merge_masks_batch(
            found.crowds, found.sizes, iou_threshold=threshold, model=model
        )
        return merged, method, dict(model.workers)
    merged = masks.merge_masks_batch(
        found.crowds,
        found.sizes,
        iou_threshold=threshold,
        method="quorum",
        quorum=settings.shape_quorum,
    )
    return merged, "quorum", {}


def _shape_workers(
    found: _Crowds, merged: list[list[MergedObject]], model: dict[Hashable, Any]
) -> list[dict[str, Any]]:
    """Per worker: answers and items given, and their agreement with the consensus: an item
    agrees when it went into a merged object and carries that object's label; precision is
    the share of their items that agree, recall the share of the merged objects of the images
    they answered that they gave an agreeing item to. With a worker model (``em``), also every
    field of what it learnt of them (``box_model``, ``polygon_model``, ``keypoint_model``,
    ``mask_model``, ``semantic_model``)."""
    stats: dict[Hashable, list[int]] = {}  # worker -> [answers, items, objects seen, agreeing]
    for crowd, objects in zip(_labels_given(found), merged, strict=True):
        given = dict(crowd)
        for worker, labels in crowd:
            entry = stats.setdefault(worker, [0, 0, 0, 0])
            entry[0] += 1
            entry[1] += len(labels)
            entry[2] += len(objects)
        for obj in objects:
            for worker, item in zip(obj.workers, obj.items, strict=True):
                # A worker who answered an image twice is told apart by neither; their
                # later answer stands for both.
                marked = given[worker]
                if item < len(marked) and marked[item] == obj.label:
                    stats[worker][3] += 1
    out: list[dict[str, Any]] = []
    for worker, (n_answers, n_items, n_objects, agreeing) in stats.items():
        report: dict[str, Any] = {"worker": worker, "answers": n_answers, "items": n_items}
        if worker in model:
            report.update(model[worker]._asdict())
        report["agreement"] = {
            "precision": agreeing / n_items if n_items else None,
            "recall": agreeing / n_objects if n_objects else None,
            "f1": 2 * agreeing / (n_items + n_objects) if n_items + n_objects else None,
        }
        out.append(report)
    return out


def _labels_given(found: _Crowds) -> Iterator[list[tuple[Hashable, list[str]]]]:
    """Per task, each answer's worker and the labels of its items, in order."""
    columns = found.columns
    if columns is None:
        for crowd in found.crowds:
            yield [(answer.worker, [item["label"] for item in answer.items]) for answer in crowd]
        return
    names = [columns.label_names[label] for label in columns.label.tolist()]
    answer = box = 0
    per_answer = columns.boxes_per_answer.tolist()
    for n_answers in columns.answers_per_image.tolist():
        image: list[tuple[Hashable, list[str]]] = []
        for worker, n_boxes in zip(
            columns.workers[answer : answer + n_answers],
            per_answer[answer : answer + n_answers],
            strict=True,
        ):
            image.append((worker, names[box : box + n_boxes]))
            box += n_boxes
        answer += n_answers
        yield image


# The console script


def console_main() -> NoReturn:
    """The ``crowd-aggregate`` entry point: :func:`main` in a process that ends with it.

    numpy's OpenBLAS starts a thread a core that spins after each call; the merge makes only
    small products, so one thread does them as fast and leaves the other cores to the rest of
    the machine (an explicit ``OPENBLAS_NUM_THREADS`` is kept). Once the output is written the
    process exits without freeing what it parsed object by object: on a large input that
    teardown took half a second, for memory the operating system takes back at once.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Nothing the command builds forms a reference cycle: with the collector off for good, no
    # pass ever walks the millions of parsed objects (the merge pauses it only while it runs).
    gc.disable()
    global _left_to_exit
    _left_to_exit = []
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """``crowd-aggregate``: exit status 0 on success, 2 on refused options or input."""
    parser = argparse.ArgumentParser(
        prog="crowd-aggregate",
        description="Consensus on answers collected elsewhere (CSV or JSON Lines); no "
        "database needed.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    console = Console(
        lambda text: sys.stderr.write(text), quiet=args.quiet, progress=args.progress or None
    )
    try:
        run(Settings.from_options(vars(args)), console)
    except AggregateError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 2
    return 0
