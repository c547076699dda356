"""Soak: a simulated crowd at full speed against live server processes for a long while.

``make bench BENCH_ARGS=soak`` (or ``python -m bench soak --minutes 30``). Starts throwaway
PostgreSQL and Redis servers (``--embedded``: the SQLite default instead), migrates, seeds a
project and its workers, serves it as ``make serve`` does, and lets the workers
of ``tests/reliability/crowd_client.py`` loop next -> submit with no pause, retrying like a
careful client. A feeder adds tasks whenever the project runs low. Every 10 s it samples the
resident memory of the server processes. At the end it prints RSS at start, end and peak, the
RSS slope in MiB per hour (least squares after the first fifth of the run, which is warm-up),
the requests and the errors: any 5xx, connection error or unexpected 4xx is an error; 204 (no
work) and 409 ``lease_expired`` are expected answers. Writes ``bench/results/soak.json``.

Not part of ``make bench`` without arguments, nor of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.__main__ import machine, table
from tests.e2e.server import manage, server_env
from tests.plugins.services import start
from tests.reliability.crowd_client import CONNECTION_ERRORS, Connection, CrowdRecord, run_crowd
from tests.reliability.processes import JobWorker, WebServer, rss_bytes
from tests.reliability.seeding import seed_in

NAME = "soak"
DESCRIPTION = "simulated crowd at full speed against live uvicorn processes: memory and errors"
HERE = Path(__file__).resolve().parent
SAMPLE_SECONDS = 10.0
MIB = 1024 * 1024


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    parser.add_argument("--workers", type=int, default=32, help="simulated workers (32)")
    parser.add_argument(
        "--web-processes", type=int, default=2, help="web processes, as make serve runs them (2)"
    )
    parser.add_argument("--overlap", type=int, default=3, help="answers per task (3)")
    parser.add_argument("--batch", type=int, default=1500, help="tasks added at a time (1500)")
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="the embedded default (SQLite, in-process layer and jobs) instead of PostgreSQL "
        "and Redis",
    )
    return parser.parse_args(argv)


class Feeder(threading.Thread):
    """Adds a batch of tasks whenever fewer than one batch's worth remain unfinished."""

    def __init__(self, env: dict[str, str], url: str, token: str, project: int, batch: int) -> None:
        super().__init__(daemon=True, name="feeder")
        self.env, self.project, self.batch = env, project, batch
        self.conn = Connection(url, token)
        self.stop = threading.Event()
        self.added = 0
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(2.0):
            try:
                reply = self.conn.request("GET", f"/api/v1/projects/{self.project}/progress/")
            except CONNECTION_ERRORS as exc:
                self.errors.append(f"progress: {exc}")
                continue
            finally:
                # A fresh connection each time: adding tasks takes longer than the server
                # keeps an idle connection open.
                self.conn.close()
            if reply.status != 200:
                self.errors.append(f"progress: {reply.status} {reply.body!r:.200}")
                continue
            if reply.body["tasks"] - reply.body["done"] < self.batch:
                seed_in(self.env, f"seeding.tasks_add({self.project}, {self.batch})")
                self.added += self.batch


class Sampler(threading.Thread):
    """Resident memory of the server's processes (supervisor and workers) every 10 s."""

    def __init__(self, server: WebServer) -> None:
        super().__init__(daemon=True, name="rss")
        self.server = server
        self.stop = threading.Event()
        self.samples: list[tuple[float, int, list[int]]] = []  # (seconds, total, per worker)
        self.pids: set[int] = set()
        self.started = time.monotonic()

    def sample(self) -> None:
        workers = self.server.worker_pids()
        pids = {self.server.pid, *workers}
        self.pids |= set(workers)
        total = sum(rss_bytes(pid) for pid in pids)
        per_worker = [rss_bytes(pid) for pid in workers]
        self.samples.append((time.monotonic() - self.started, total, per_worker))

    def run(self) -> None:
        self.sample()
        while not self.stop.wait(SAMPLE_SECONDS):
            self.sample()


def slope_mib_per_hour(samples: list[tuple[float, int, list[int]]]) -> float | None:
    """Least-squares slope of total RSS over time, after the first fifth (warm-up)."""
    if len(samples) < 3:
        return None
    start = samples[-1][0] / 5
    kept = [(t, rss / MIB) for t, rss, _ in samples if t >= start]
    if len(kept) < 2:
        return None
    n = len(kept)
    mean_t = sum(t for t, _ in kept) / n
    mean_m = sum(m for _, m in kept) / n
    var = sum((t - mean_t) ** 2 for t, _ in kept)
    if not var:
        return None
    cov = sum((t - mean_t) * (m - mean_m) for t, m in kept)
    return cov / var * 3600


def _environment(embedded: bool) -> tuple[dict[str, str], str]:
    var_dir = tempfile.mkdtemp(prefix="crowd-soak-")
    if embedded:
        return server_env(VAR_DIR=var_dir), "sqlite (embedded)"
    postgres, redis = start("postgres"), start("redis")
    env = server_env(DATABASE_URL=postgres.url, REDIS_URL=redis.url, VAR_DIR=var_dir)
    return env, "postgresql + redis"


def soak(args: argparse.Namespace) -> tuple[dict[str, Any], list[tuple[float, int, list[int]]]]:
    env, database = _environment(args.embedded)
    if not args.embedded:
        # A PostgreSQL of its own starts empty.
        import psycopg

        admin = env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE crowd")
    manage(env, "migrate", "--noinput")
    seeded = seed_in(
        env,
        f"seeding.crowd(workers={args.workers}, tasks={args.batch * 2}, "
        f"overlap={args.overlap}, prefix='soak')",
    )
    record = CrowdRecord()
    stop = threading.Event()
    # Production runs job workers beside the web processes (the periodic sweep, consensus).
    jobs = None if args.embedded else JobWorker(env)
    server = WebServer(env, workers=args.web_processes)
    try:
        server.wait_serving()
        if jobs is not None:
            jobs.wait_ready()
        sampler = Sampler(server)
        feeder = Feeder(env, server.url, seeded["manager"], seeded["project"], args.batch)
        sampler.start()
        feeder.start()

        def on_empty() -> bool:
            stop.wait(0.5)  # the feeder is adding tasks
            return not stop.is_set()

        began = time.monotonic()
        crowd = run_crowd(
            base_url=server.url, tokens=seeded["workers"], project_id=seeded["project"],
            record=record, stop=stop, on_empty=on_empty,
        )  # fmt: skip
        deadline = began + args.minutes * 60
        while time.monotonic() < deadline and any(w.is_alive() for w in crowd):
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            print(
                f"  {time.monotonic() - began:7.0f} s  {record.acks()} answers  "
                f"{record.requests} requests  {record.server_errors} 5xx",
                flush=True,
            )
        stop.set()
        for worker in crowd:
            worker.join(timeout=120)
        elapsed = time.monotonic() - began
        feeder.stop.set()
        sampler.stop.set()
        sampler.join()
        sampler.sample()
        feeder.join(timeout=60)
        replaced = len(sampler.pids) - args.web_processes
        # Throttled requests (429, expected: the crowd is faster than people) left out.
        server_warnings = [
            line for line in server.log_text().splitlines()
            if ("WARNING" in line or "ERROR" in line) and "Too Many Requests" not in line
        ]  # fmt: skip
    finally:
        stop.set()
        server.stop()
        if jobs is not None:
            jobs.stop()

    totals = [rss for _, rss, _ in sampler.samples]
    unexpected_4xx = len(record.unexpected)
    conflicts = record.total(lambda e, s: e == "submit" and s == "409")
    expired = conflicts - sum(1 for e, s, _ in record.unexpected if (e, s) == ("submit", 409))
    row = {
        "minutes": round(elapsed / 60, 2),
        "database": database,
        "web_processes": args.web_processes,
        "workers": args.workers,
        "requests": record.requests,
        "req_per_s": record.requests / elapsed,
        "answers": record.acks(),
        "no_work_204": record.total(lambda e, s: s == "204"),
        # THROTTLE_NEXT (120 a minute a worker) met by a crowd faster than people: waited out.
        "throttled_429": record.total(lambda e, s: s == "429"),
        "expired_409": expired,
        "errors": record.server_errors + record.connection_errors + unexpected_4xx,
        "errors_5xx": record.server_errors,
        "connection_errors": record.connection_errors,
        "unexpected_4xx": unexpected_4xx,
        "client_failures": len(record.failures),
        "rss_start_MiB": totals[0] / MIB,
        "rss_end_MiB": totals[-1] / MIB,
        "rss_max_MiB": max(totals) / MIB,
        "slope_MiB_per_hour": slope_mib_per_hour(sampler.samples),
        "processes_replaced": replaced,
        "tasks_added": feeder.added,
    }
    if record.connection_errors:
        by_endpoint = {e: n for (e, status), n in record.counts.items() if status == "conn"}
        print("connection errors by endpoint:", by_endpoint)
    if server_warnings:
        print(f"server log: {len(server_warnings)} warnings and errors; the last:",
              *server_warnings[-5:], sep="\n  ")  # fmt: skip
    if record.failures or record.unexpected or feeder.errors:
        print("problems:", *record.failures[:5], *record.unexpected[:5], *feeder.errors[:5],
              sep="\n  ")  # fmt: skip
    return row, sampler.samples


def main(argv: list[str]) -> int:
    args = _args(argv)
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, Python {info['python']}"
    )
    print(f"soak: {args.workers} workers for {args.minutes:g} min")
    row, samples = soak(args)
    print(f"\n## {NAME}: {DESCRIPTION}\n{table([row])}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    result = {
        "name": NAME, "description": DESCRIPTION, "machine": info, "quick": False,
        "rows": [row],
        "rss_samples": [{"seconds": round(t, 1), "rss_MiB": round(total / MIB, 1),
                         "per_process_MiB": [round(r / MIB, 1) for r in per]}
                        for t, total, per in samples],
    }  # fmt: skip
    (out_dir / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON written to {out_dir}/{NAME}.json")
    return 1 if row["errors"] or row["client_failures"] else 0
