"""The processes a deployment runs, started for real: uvicorn (with its supervisor) and
Dramatiq job workers (``manage.py rundramatiq``).

Each is started in a session of its own, so that it and the processes it forks form one
process group that can be signalled at once (``kill -9`` of a job worker kills its worker
processes too) and is always ended when the test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from tests.e2e.server import ROOT, web_command
from tests.plugins.services import free_port
from tests.reliability.crowd_client import Connection

START_TIMEOUT = 90.0
G = TypeVar("G", bound="Group")


class Group:
    """A process started as the leader of its own process group, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], what: str) -> None:
        fd, name = tempfile.mkstemp(prefix="crowd-reliability-", suffix=".log")
        self.log = Path(name)
        self.what = what
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=fd, stderr=subprocess.STDOUT, start_new_session=True
        )
        os.close(fd)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return f"--- {self.what} log ---\n{self.log_text()[-chars:]}"

    def signal_group(self, sig: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL to every process of the group: a crash, with no chance to clean up."""
        self.signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)
        # Forked children are reparented when the leader dies; let them go too.
        deadline = time.monotonic() + 10
        while _group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL whatever is left; removes the log."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        if _group_members(self.process.pid):
            self.signal_group(signal.SIGKILL)
        if self.alive():
            self.process.wait(timeout=10)
        self.log.unlink(missing_ok=True)

    def wait_for_log(self, text: str, timeout: float = START_TIMEOUT, start: int = 0) -> None:
        """Wait until ``text`` appears in the log after character ``start``."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text()[start:]:
            if not self.alive():
                raise RuntimeError(f"{self.what} exited\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.what}: no {text!r} in {timeout:.0f} s\n{self.log_tail()}"
                )
            time.sleep(0.1)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp. Zombies are gone as far as we care.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --- Job workers ------------------------------------------------------------------------------


class JobWorker(Group):
    """``manage.py rundramatiq`` with one worker process, as ``make worker`` runs it."""

    def __init__(self, env: dict[str, str], *, threads: int = 2) -> None:
        super().__init__(
            [sys.executable, "manage.py", "rundramatiq", "--processes", "1",
             "--threads", str(threads)],
            env,
            "rundramatiq",
        )  # fmt: skip

    def wait_ready(self) -> JobWorker:
        self.wait_for_log("Worker process is ready for action.")
        return self


def job_worker(env: dict[str, str], *, threads: int = 2) -> JobWorker:
    """A job worker, starting (call ``wait_ready``)."""
    return JobWorker(env, threads=threads)


# --- Web servers ------------------------------------------------------------------------------


class WebServer(Group):
    """The web processes as ``make serve`` runs them. With ``workers > 1``, ``crowd.serve``:
    the supervisor holds the listening socket and hands each connection to the worker process
    with the fewest, so the port outlives any one of them; it replaces a worker process that
    dies. One worker: uvicorn itself."""

    def __init__(self, env: dict[str, str], *, workers: int, access_log: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        command = web_command(self.port, workers, access_log=access_log)
        super().__init__(command, env, f"web x{workers}")

    def worker_pids(self) -> list[int]:
        """The processes serving requests: the supervisor's workers, or uvicorn itself."""
        if self.workers == 1:
            return [self.pid]
        return [
            pid
            for pid in children(self.pid)
            if "multiprocessing" in (line := _cmdline(pid)) and "resource_tracker" not in line
        ]

    def wait_serving(self, exclude: frozenset[int] = frozenset()) -> list[int]:
        """Wait until all worker processes (none of ``exclude``) have loaded the app and the
        port answers; return their pids."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.alive():
                raise RuntimeError(f"uvicorn exited\n{self.log_tail()}")
            pids = self.worker_pids()
            log = self.log_text()
            loaded = [p for p in pids if f"Started server process [{p}]" in log]
            if len(loaded) == self.workers and not set(loaded) & exclude and self._healthy():
                return loaded
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start serving\n{self.log_tail()}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        conn = Connection(self.url, timeout=5)
        try:
            return conn.request("GET", "/healthz").status == 200
        except OSError:
            return False
        finally:
            conn.close()


@contextmanager
def web_server(
    env: dict[str, str], *, workers: int = 1, access_log: bool = False
) -> Iterator[WebServer]:
    server = WebServer(env, workers=workers, access_log=access_log)
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()


@contextmanager
def running(group: G) -> Iterator[G]:
    try:
        yield group
    finally:
        group.stop()
