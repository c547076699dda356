"""The README's API walk-through, run as a user runs it: its shell blocks, in one bash session,
with the real ``curl``, against uvicorn serving a database seeded as ``make demo`` seeds it.

Each ```sh block of the "API walk-through" section is pasted into the session as it stands
(the only change: the demo's address becomes the test server's). A ``curl`` shell function
in front of the real one records every call's status line and body. A block's calls must
all succeed (2xx), but for the last one when the block is followed by a ```http sample: that
call must answer the sample's status, and a body of the sample's shape (same keys at every
level, ``"...": "..."`` allowing more; lists compared item by item with the sample's first
item; scalars by kind). The rest of the README is held to the server too: its API overview
table names every route with the methods it serves, and no ``curl`` example lives outside
the walk-through, where nothing would run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from tests import images
from tests.e2e.server import ROOT, LiveServer, live_server, manage, server_env

README = ROOT / "README.md"
CONTRACT = ROOT.parent / "shared" / "API.md"
WALKTHROUGH = "## API walk-through"
OVERVIEW = "## API overview"
DEMO_URL = "http://localhost:8000"
MORE = "..."

# Records each call in $README_CALLS as <block>-<time>.{args,headers,body}, then behaves as curl.
CURL_RECORDER = r"""
curl() {
    local record
    record="$README_CALLS/$(printf %03d "$README_BLOCK")-$(date +%s%N)"
    printf '%s\n' "$*" > "$record.args"
    command curl -D "$record.headers" "$@" | tee "$record.body"
    return "${PIPESTATUS[0]}"
}
"""


@dataclass
class Example:
    line: int  # of the block's opening fence in README.md
    script: str
    status: int | None = None  # of the block's last call, when a sample follows
    sample: Any = None


@dataclass
class Call:
    args: str
    status: int
    body: str


def section(text: str, heading: str) -> tuple[int, str]:
    """The section under ``heading`` (to the next ``## ``), and the line it starts on."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text.count("\n", 0, start) + 1, text[start : end if end >= 0 else len(text)]


def fences(text: str) -> Iterator[tuple[int, str, str]]:
    """(line, language, body) of every fenced block of ``text``."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        yield text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2)


def walkthrough(text: str) -> list[Example]:
    first_line, body = section(text, WALKTHROUGH)
    examples: list[Example] = []
    for line, lang, block in fences(body):
        where = f"README.md:{first_line + line - 1}"
        if lang == "sh":
            examples.append(Example(first_line + line - 1, block))
        elif lang == "http":
            assert examples, f"{where}: a sample before any block"
            assert examples[-1].status is None, f"{where}: a second sample of one block"
            head, _, json_text = block.partition("\n")
            status = re.fullmatch(r"HTTP/1\.1 (\d{3})( [\w ]+)?", head)
            assert status, f"{where}: a sample starts with its status line, not {head!r}"
            examples[-1].status = int(status.group(1))
            examples[-1].sample = json.loads(json_text) if json_text.strip() else None
        else:
            raise AssertionError(f"{where}: the walk-through's blocks are sh or http, not {lang!r}")
    return examples


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "null"


def shape_errors(sample: Any, actual: Any, where: str = "$") -> list[str]:
    """How ``actual`` departs from the shape of ``sample`` (a null sample takes any scalar)."""
    if sample is None:
        if kind(actual) in ("object", "array"):
            return [f"{where}: {kind(actual)} where the README shows null"]
        return []
    if kind(actual) != kind(sample) and actual is not None:
        return [f"{where}: {kind(actual)} where the README shows {kind(sample)}"]
    if isinstance(sample, dict) and isinstance(actual, dict):
        shown = set(sample) - {MORE}
        errors = [f"{where}: no {key!r}" for key in sorted(shown - set(actual))]
        if MORE not in sample:
            errors += [f"{where}: {key!r} not in the README" for key in sorted(set(actual) - shown)]
        for key in sorted(shown & set(actual)):
            errors += shape_errors(sample[key], actual[key], f"{where}.{key}")
        return errors
    if isinstance(sample, list) and isinstance(actual, list) and sample:
        if not actual:
            return [f"{where}: empty where the README shows items"]
        return [
            e
            for i, item in enumerate(actual)
            for e in shape_errors(sample[0], item, f"{where}[{i}]")
        ]
    return []


def recorded_calls(calls_dir: Path) -> dict[int, list[Call]]:
    by_block: dict[int, list[Call]] = {}
    for args in sorted(calls_dir.glob("*.args")):
        stem = args.with_suffix("")
        headers = stem.with_suffix(".headers").read_text(errors="replace")
        # The last status line: a large upload first gets "100 Continue".
        statuses = re.findall(r"^HTTP/[\d.]+ (\d{3})", headers, re.MULTILINE)
        body = stem.with_suffix(".body")
        call = Call(
            args.read_text().strip(),
            int(statuses[-1]) if statuses else 0,
            body.read_text(errors="replace") if body.exists() else "",
        )
        by_block.setdefault(int(stem.name.split("-")[0]), []).append(call)
    return by_block


@pytest.fixture(scope="module")
def demo() -> Iterator[LiveServer]:
    env = server_env()
    manage(env, "migrate", "--noinput")
    manage(env, "seed_demo")
    with live_server(env) as server:
        yield server


def test_the_walkthrough_runs_as_the_readme_shows(demo: LiveServer, tmp_path: Path) -> None:
    assert shutil.which("curl"), "the README's examples need curl (apt-get install curl)"
    examples = walkthrough(README.read_text())
    assert len(examples) >= 10, "the walk-through lost its examples"
    # What the user has in the current directory: the images the upload block names.
    work = tmp_path / "work"
    work.mkdir()
    (work / "cat.jpg").write_bytes(images.jpeg(seed=1))
    (work / "dog.jpg").write_bytes(images.jpeg(seed=2))
    (work / "pets.zip").write_bytes(
        images.zip_of({"bird.png": images.png(seed=3), "fish.png": images.png(seed=4)})
    )
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    script = CURL_RECORDER + "".join(
        f"\nREADME_BLOCK={i}\n{example.script.replace(DEMO_URL, demo.url)}"
        for i, example in enumerate(examples)
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "URL")}
    # `python3` reads the JSON: this interpreter's, whatever PATH the suite runs with.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["README_CALLS"] = str(calls_dir)
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        cwd=work, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    took = time.monotonic() - started
    assert not done.stderr, f"the walk-through wrote errors:\n{done.stderr}\n{done.stdout}"
    assert "dataset.json: OK" in done.stdout, done.stdout
    assert took < 60, f"the walk-through took {took:.1f} s"

    calls = recorded_calls(calls_dir)
    failures: list[str] = []
    for i, example in enumerate(examples):
        where = f"README.md:{example.line}"
        block_calls = calls.get(i, [])
        if not block_calls:
            failures.append(f"{where}: the block made no curl call")
            continue
        *before, last = block_calls
        for call in before if example.status is not None else block_calls:
            if not 200 <= call.status < 300:
                failures.append(f"{where}: {call.status} for curl {call.args}\n{call.body[:500]}")
        if example.status is None:
            continue
        if last.status != example.status:
            failures.append(
                f"{where}: {last.status} where the README shows {example.status}"
                f" for curl {last.args}\n{last.body[:500]}"
            )
            continue
        try:
            body = json.loads(last.body) if last.body.strip() else None
        except ValueError:
            failures.append(f"{where}: not JSON: {last.body[:500]}")
            continue
        errors = shape_errors(example.sample, body)
        if errors:
            listed = "\n  ".join(errors)
            failures.append(f"{where}: not the README's shape:\n  {listed}\n{last.body[:1500]}")
    assert not failures, "\n\n".join(failures)


def test_curl_examples_live_in_the_walkthrough() -> None:
    text = README.read_text()
    first_line, body = section(text, WALKTHROUGH)
    end_line = first_line + body.count("\n")
    outside = [
        f"README.md:{line}"
        for line, _, block in fences(text)
        if "curl " in block and not first_line <= line <= end_line
    ]
    assert not outside, f"curl examples the walk-through test does not run: {outside}"


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield "/" + route, pattern.callback


def _methods(callback: Any) -> set[str]:
    view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view is None:
        return {"GET"}  # a function view: healthz
    return {
        m.upper()
        for m in view.http_method_names
        if m not in ("options", "head", "trace") and hasattr(view, m)
    }


def _normal(path: str) -> str:
    path = re.sub(r"<\w+:\w+>|\{\w+\}", "{}", path)
    return path.removeprefix("/api/v1")


def _overview_table() -> dict[str, set[str]]:
    """Path -> methods, from the API overview table's first column."""
    _, body = section(README.read_text(), OVERVIEW)
    table: dict[str, set[str]] = {}
    for row in re.findall(r"^\| (.+?) \|", body, re.MULTILINE):
        for cell in re.findall(r"`([A-Z, ]+) (/\S+)`", row):
            methods, path = cell
            table.setdefault(_normal(path), set()).update(m.strip() for m in methods.split(","))
    return table


def test_overview_table_names_every_route_and_method() -> None:
    table = _overview_table()
    wrong = []
    for route, callback in _routes(get_resolver().url_patterns):
        if not route.startswith(("/api/", "/healthz")):
            continue  # pages and the admin
        path, methods = _normal(route), _methods(callback)
        listed = table.pop(path, set())
        if listed != methods:
            wrong.append(f"{route}: serves {sorted(methods)}, README {sorted(listed)}")
    for path, methods in table.items():
        if "WS" not in methods:
            wrong.append(f"{path}: in the README ({sorted(methods)}) but no route serves it")
    assert not wrong, "the API overview table is out of date:\n" + "\n".join(wrong)


@pytest.mark.skipif(not CONTRACT.exists(), reason="the shared contract is not beside the checkout")
def test_overview_names_every_path_of_the_contract() -> None:
    _, overview = section(README.read_text(), OVERVIEW)
    named = {_normal(p) for p in re.findall(r"(/(?:api/v1/)?[\w{}/.-]+/)", overview)}
    contract = {
        _normal(p) for p in re.findall(r"`(?:[A-Z/]+ )(/api/v1/[\w{}/.-]+)`", CONTRACT.read_text())
    }
    assert not contract - named, f"contract paths the README leaves out: {sorted(contract - named)}"


def test_shapes_compare_keys_at_every_level() -> None:
    sample = {"id": 1, "labels": [{"name": "cat", "...": "..."}], "next": None, "...": "..."}
    assert shape_errors(sample, {"id": 2, "labels": [], "next": "u", "extra": 0}) == [
        "$.labels: empty where the README shows items"
    ]
    assert (
        shape_errors(sample, {"id": 2, "labels": [{"name": "dog", "color": "#fff"}], "next": None})
        == []
    )
    assert shape_errors({"id": 1, "run": None}, {"id": "1", "run": {}}) == [
        "$.id: string where the README shows number",
        "$.run: object where the README shows null",
    ]
    assert shape_errors({"a": 1}, {"a": 1, "b": 2}) == ["$: 'b' not in the README"]
    assert shape_errors({"a": 1, "b": 2}, {"a": 1}) == ["$: no 'b'"]
    assert shape_errors({"count": 0, "results": []}, [1]) == [
        "$: array where the README shows object"
    ]
