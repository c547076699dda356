"""Run the real app in server processes (uvicorn, as ``make demo``/``make serve`` do)."""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.plugins.services import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LiveServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Token {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        return status, json.loads(raw) if raw else None


def server_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(overrides)
    if "VAR_DIR" not in env:
        env["VAR_DIR"] = tempfile.mkdtemp(prefix="crowd-e2e-var-")
        # The servers' database, media and secret key go when the test run ends.
        atexit.register(shutil.rmtree, env["VAR_DIR"], ignore_errors=True)
    env["PYTHONUNBUFFERED"] = "1"
    # The servers of one run share a key, as a deployment on PostgreSQL must.
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def web_command(
    port: int, workers: int, *, shared_socket: bool = False, access_log: bool = True
) -> list[str]:
    """The command line of the web processes: several as ``make serve`` runs them
    (``crowd.serve``: each connection to the least busy) or, with ``shared_socket``, as
    ``uvicorn --workers`` does (one socket for all); one, uvicorn itself."""
    quiet = [] if access_log else ["--no-access-log"]
    if workers > 1 and not shared_socket:
        return [sys.executable, "-m", "crowd.serve", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), *quiet]  # fmt: skip
    return [sys.executable, "-m", "uvicorn", "crowd.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--lifespan", "off",
            "--ws-per-message-deflate", "false", *quiet]  # fmt: skip


@contextmanager
def live_server(
    env: dict[str, str], workers: int = 1, shared_socket: bool = False, port: int = 0
) -> Iterator[LiveServer]:
    """The web processes of ``web_command`` on ``port`` (or a free one), until /healthz
    answers."""
    port = port or free_port()
    fd, log_name = tempfile.mkstemp(prefix="crowd-uvicorn-", suffix=".log")
    log = Path(log_name)
    process = subprocess.Popen(
        web_command(port, workers, shared_socket=shared_socket),
        cwd=ROOT, env=env, stdout=fd, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = LiveServer(f"http://127.0.0.1:{port}", port, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
            try:
                status, _ = server.request("GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(fd)
        log.unlink()


def ws_connect(server: LiveServer, path: str) -> ClientConnection:
    url = server.url.replace("http://", "ws://") + path
    return connect(url, proxy=None, open_timeout=10)


def frames_until(
    ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Every frame up to and including the first one ``wanted`` accepts."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no matching frame within {timeout} s; received {seen}")
        try:
            frame = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            raise AssertionError(f"no matching frame within {timeout} s; received {seen}") from None
        seen.append(frame)
        if wanted(frame):
            return seen
