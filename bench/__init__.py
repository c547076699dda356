"""Benchmarks: ``python -m bench [name ...]`` (``make bench``); see ``bench/__main__.py``."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``share`` of the values
    at or below it (``values`` need not be sorted; not empty)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(len(ordered) * share) - 1, 0)]


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: ``VmHWM``, the high-water mark of its own address
    space. Linux's ``ru_maxrss`` keeps the parent's peak across fork and exec, so a child
    started by a large parent would report the parent's; it is the fallback elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def spawn(child: str, *args: str) -> dict[str, Any]:
    """Run ``child`` (Python code reading ``sys.argv[1:]``, ``args``) in a fresh process
    with this one's environment, its database connections closed first so that none is
    shared; the JSON object it prints last."""
    from django.db import connections

    connections.close_all()
    done = subprocess.run(
        [sys.executable, "-c", child, *args],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
