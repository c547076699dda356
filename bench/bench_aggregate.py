"""``crowd-aggregate`` end to end on a large box export, against WBF on the same answers.

The input is :func:`bench.consensus_shapes.box_crowd`'s crowd (each image answered by four
honest workers of a pool and one spammer, worker ids kept across images, each answer with its
worker's weight) written as the JSON Lines the tool reads: 20,000 images x 5 answers (2,000
with ``--quick``). Rows:

- ``crowd-aggregate --kind bbox``: the whole command as a user runs it (a subprocess: start-up,
  reading and checking every line, the batched merge with the worker model, writing), best
  of two runs (one quick), and once more with ``--report`` (the worker model learnt again for
  it);
- ``weighted_boxes_fusion``: ensemble_boxes in-process, one call per image as the consensus
  benchmark calls it (each worker one model, weight = the answer's weight, iou_thr 0.5),
  objects kept from fused score 0.5; its time excludes reading the file, which favours it;
- start-up: ``crowd-aggregate --help``, and the command on a one-line input (which imports
  the consensus stack), best of five.

The command runs as installed, its bytecode cached: a warm-up run first, with the cache in the
temporary folder (``PYTHONPYCACHEPREFIX``), so a ``PYTHONDONTWRITEBYTECODE`` environment does
not make every run compile the project again and the checkout is left as it is. Beside wall
time, ``cpu_seconds`` (the subprocess's user and system time; WBF's process time) is given:
on a machine shared with other work it moves far less than wall time.

F1 is at IoU 0.5 with the label required to match, against the crowd's true boxes. Targets:
the whole command at least ``SPEEDUP_TARGET`` times faster than WBF; ``--help`` under
``STARTUP_TARGET`` seconds.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.consensus_shapes import SEED, BoxImage, _score_boxes, _wbf, box_crowd

NAME = "aggregate"
DESCRIPTION = "crowd-aggregate --kind bbox end to end vs weighted_boxes_fusion, and its start-up"
SPEEDUP_TARGET = 5.0
STARTUP_TARGET = 0.5
WBF_CUT = 0.5


def script() -> str:
    """The installed ``crowd-aggregate``, beside the running interpreter."""
    found = shutil.which("crowd-aggregate", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(
            "crowd-aggregate is not installed beside this Python: `pip install -e .` the project"
        )
    return found


def _row(
    step: str,
    dataset: str,
    seconds: tuple[float, float],
    f1: float | None,
    speedup: float | None,
    target: str,
) -> dict[str, Any]:
    return {
        "step": step,
        "dataset": dataset,
        "seconds": round(seconds[0], 3),
        "cpu_seconds": round(seconds[1], 3),
        "f1": None if f1 is None else round(f1, 4),
        "speedup": None if speedup is None else round(speedup, 2),
        "target": target,
    }


def _timed(command: list[str], repeats: int, env: dict[str, str]) -> tuple[float, float]:
    """The best wall time of ``repeats`` runs, and that run's CPU time."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        best = min(best, (wall, cpu))
    return best


def _write_input(path: Path, images: list[BoxImage], answers: list[Any]) -> int:
    lines = 0
    with path.open("wb") as out:
        for index, (image, crowd) in enumerate(zip(images, answers, strict=True)):
            for worker, weight, items in crowd:
                row = {
                    "task": f"img{index}",
                    "worker": worker,
                    "weight": weight,
                    "annotations": items,
                    "width": image.width,
                    "height": image.height,
                }
                out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
                lines += 1
    return lines


def run(quick: bool = False) -> list[dict[str, Any]]:
    command = script()
    n_images = 2_000 if quick else 20_000
    repeats = 1 if quick else 2
    images, answers = box_crowd(n_images, SEED)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "answers.jsonl", Path(folder) / "consensus.jsonl"
        lines = _write_input(source, images, answers)
        megabytes = source.stat().st_size / 1e6
        dataset = f"{n_images} images, {lines} answers, {megabytes:.0f} MB of JSON Lines"
        base = [command, "--kind", "bbox", "--input", str(source), "--output", str(target)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "bytecode")
        one = Path(folder) / "one.jsonl"
        one.write_bytes(source.read_bytes().split(b"\n", 1)[0] + b"\n")
        one_line = [command, "--kind", "bbox", "--input", str(one), "--output", str(target)]
        _timed([*one_line, "--quiet"], 1, env)  # warm-up: the bytecode cache

        wbf_started, wbf_cpu_started = time.perf_counter(), time.process_time()
        fused = _wbf(images, answers)
        wbf = (time.perf_counter() - wbf_started, time.process_time() - wbf_cpu_started)
        wbf_f1, _ = _score_boxes(
            images, [[item for item, score in objs if score >= WBF_CUT - 1e-9] for objs in fused]
        )

        seconds = _timed([*base, "--quiet"], repeats, env)
        found = [orjson.loads(line)["annotations"] for line in target.read_bytes().splitlines()]
        f1, _ = _score_boxes(images, found)
        speedup = wbf[0] / seconds[0]
        cpu_speedup = wbf[1] / seconds[1]
        rows.append(
            _row(
                "crowd-aggregate --kind bbox (em), whole command",
                dataset,
                seconds,
                f1,
                speedup,
                f"{'ok' if speedup >= SPEEDUP_TARGET else 'MISSED'} (>= {SPEEDUP_TARGET:g}x WBF; "
                f"{cpu_speedup:.1f}x in CPU time)",
            )
        )
        report = Path(folder) / "report.json"
        with_report = _timed([*base, "--quiet", "--report", str(report)], 1, env)
        rows.append(
            _row(
                "crowd-aggregate --kind bbox --report, whole command",
                dataset,
                with_report,
                f1,
                wbf[0] / with_report[0],
                "-",
            )
        )
        rows.append(
            _row(
                f"weighted_boxes_fusion per image, score >= {WBF_CUT}",
                dataset,
                wbf,
                wbf_f1,
                1.0,
                "baseline",
            )
        )

        help_seconds = _timed([command, "--help"], 5, env)
        rows.append(
            _row(
                "start-up: crowd-aggregate --help",
                "-",
                help_seconds,
                None,
                None,
                f"{'ok' if help_seconds[0] < STARTUP_TARGET else 'MISSED'} "
                f"(< {STARTUP_TARGET:g} s)",
            )
        )
        one_seconds = _timed([*one_line, "--quiet"], 5, env)
        rows.append(
            _row(
                "start-up: crowd-aggregate --kind bbox on one line",
                "1 answer",
                one_seconds,
                None,
                None,
                "-",
            )
        )
    return rows
