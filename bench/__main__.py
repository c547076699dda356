"""``make bench``: run every ``bench/bench_*.py``, print a table each, write JSON results.

Each module has ``NAME``, ``DESCRIPTION`` and ``run(quick: bool) -> list[dict]``; rows share
keys, which become the table's columns. Results go to ``bench/results/<name>.json`` with the
machine they were measured on. A module with ``SECTIONS`` (names of its parts) runs one part
when asked as ``<name>:<section>`` (``python -m bench consensus:masks``): ``run(quick,
sections=[...])``, results in ``bench/results/<name>-<section>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def machine() -> dict[str, Any]:
    memory = ""
    try:
        with open("/proc/meminfo") as fh:
            memory = fh.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": memory, "python": sys.version.split()[0]}


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def main() -> int:
    if sys.argv[1:2] == ["soak"]:
        # The long-running soak has options of its own and is never part of "all".
        from bench import soak

        return soak.main(sys.argv[2:])
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "only", nargs="*",
        help="benchmark names to run (default: all); NAME:SECTION runs one part of one",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    args = parser.parse_args()
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    parts = [name for name in args.only if ":" in name]
    unknown = [name for name in args.only if name.split(":", 1)[0] not in names]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)} (there are: {', '.join(names)})")
    if parts and len(args.only) > 1:
        parser.error("run one NAME:SECTION at a time")
    if parts:
        return _section(parts[0], quick=args.quick)
    selected = [n for n in names if not args.only or n in args.only]
    if len(selected) > 1:
        # Each benchmark in a process of its own: each configures Django (and its database)
        # for itself, and settings load once per process.
        failed = 0
        for name in selected:
            command = [sys.executable, "-m", "bench", name, *(["--quick"] if args.quick else [])]
            failed += subprocess.run(command, check=False).returncode != 0
        return 1 if failed else 0
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, Python {info['python']}"
    )
    for name in selected:
        module = importlib.import_module(f"bench.bench_{name}")
        started = time.perf_counter()
        rows = module.run(quick=args.quick)
        elapsed = time.perf_counter() - started
        print(f"\n## {name}: {module.DESCRIPTION} ({elapsed:.1f} s)\n{table(rows)}")
        result = {"name": name, "description": module.DESCRIPTION, "machine": info,
                  "quick": args.quick, "rows": rows}  # fmt: skip
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON written to {out_dir}/")
    return 0


def _section(spec: str, *, quick: bool) -> int:
    name, section = spec.split(":", 1)
    module = importlib.import_module(f"bench.bench_{name}")
    sections = getattr(module, "SECTIONS", ())
    if section not in sections:
        print(f"{name} has no section {section!r} (it has: {', '.join(sections) or 'none'})")
        return 2
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, Python {info['python']}"
    )
    started = time.perf_counter()
    rows = module.run(quick=quick, sections=[section])
    elapsed = time.perf_counter() - started
    print(f"\n## {spec}: {module.DESCRIPTION} ({elapsed:.1f} s)\n{table(rows)}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    result = {"name": spec, "description": module.DESCRIPTION, "machine": info,
              "quick": quick, "rows": rows}  # fmt: skip
    (out_dir / f"{name}-{section}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON written to {out_dir}/{name}-{section}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
