"""A simulated crowd over plain HTTP, shared by the reliability tests and ``bench/soak.py``.

Each worker is a thread with its own token and keep-alive connection that loops
``assignments/next/`` -> ``submit/``, behaving as a careful client should: a submission
carries one ``Idempotency-Key`` per assignment, and a connection error or a 5xx is retried
with the same key, after a growing back-off, until the server gives a definite answer; a 429
waits for its ``Retry-After``. Everything the workers saw goes into a :class:`CrowdRecord`,
so a test can hold it against the database.

Only the standard library is used: no Django, so the soak runner can import it anywhere.
"""

from __future__ import annotations

import http.client
import json
import random
import select
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Connection-level failures: refused, reset, closed mid-response, timed out.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)
GIVE_UP_SECONDS = 90.0
MAX_BACKOFF_SECONDS = 2.0
MAX_RETRY_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened after any failure."""

    def __init__(self, base_url: str, token: str = "", timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send one request; raises one of CONNECTION_ERRORS when no response came back."""
        if self._conn is not None and _dropped(self._conn):
            self.close()  # the server closed it while it was idle (its keep-alive timeout)
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Token {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        try:
            self._conn.request(method, path, body=data, headers=sent)
            response = self._conn.getresponse()
            raw = response.read()
        except CONNECTION_ERRORS:
            self.close()
            raise
        if response.will_close:
            self.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, parsed)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle keep-alive connection was closed by the server, as a browser (or
    urllib3) checks before reusing one: between responses nothing is due, so a socket ready
    to read has reached its end. Sending on it would fail as a connection error that no
    server did anything wrong to cause."""
    sock = conn.sock
    if sock is None:
        return False
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class Unanswered(Exception):
    """The server gave no definite answer within the retry budget."""


@dataclass
class Ack:
    """A submission the client saw acknowledged."""

    worker: str
    key: str
    item: dict[str, Any]
    body: Any
    attempts: int


@dataclass
class CrowdRecord:
    """What the simulated workers saw; thread-safe."""

    # (endpoint, status) -> count; status "conn" is a connection error (no response).
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    acked: dict[int, Ack] = field(default_factory=dict)
    # Replies a client did not expect (not 2xx, 5xx or the expected 409): endpoint, status, body.
    unexpected: list[tuple[str, int, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, endpoint: str, status: int | str) -> None:
        with self.lock:
            self.counts[(endpoint, str(status))] += 1

    def total(self, predicate: Callable[[str, str], bool] = lambda e, s: True) -> int:
        with self.lock:
            return sum(n for (e, s), n in self.counts.items() if predicate(e, s))

    @property
    def requests(self) -> int:
        return self.total(lambda e, s: s != "conn")

    @property
    def server_errors(self) -> int:
        return self.total(lambda e, s: s.startswith("5"))

    @property
    def connection_errors(self) -> int:
        return self.total(lambda e, s: s == "conn")

    def acks(self) -> int:
        with self.lock:
            return len(self.acked)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): doubling from 50 ms to 2 s, with
    jitter so that clients cut off together do not come back together."""
    return min(MAX_BACKOFF_SECONDS, 0.05 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def retry_after_jitter() -> float:
    """Seconds added to a ``Retry-After`` wait. The header is a whole number of seconds, and
    a client that sends again exactly that long after its last reply meets an idle
    connection's keep-alive timeout (uvicorn's is 5 s) as the server closes it: the request
    goes out on a socket closing under it and is lost. A little later, the close has arrived
    and the idle connection is seen dropped (``_dropped``); clients throttled together also
    come back apart."""
    return random.uniform(0.05, 0.25)


def call_until_answered(
    conn: Connection,
    method: str,
    path: str,
    *,
    endpoint: str,
    record: CrowdRecord,
    body: Any = None,
    headers: dict[str, str] | None = None,
    give_up_after: float = GIVE_UP_SECONDS,
) -> tuple[Reply, int]:
    """Send the same request until the server answers it definitely (not a 5xx, not a
    connection error, not a 429); returns the reply and the number of attempts."""
    deadline = time.monotonic() + give_up_after
    attempts = failures = 0
    while True:
        attempts += 1
        wait: float
        try:
            reply = conn.request(method, path, body, headers)
        except CONNECTION_ERRORS as exc:
            record.count(endpoint, "conn")
            problem = f"{type(exc).__name__}: {exc}"
            failures += 1
            wait = backoff(failures)
        else:
            record.count(endpoint, reply.status)
            if reply.status == 429:
                problem = "429"
                retry_after = reply.headers.get("retry-after", "1")
                try:
                    wait = min(MAX_RETRY_AFTER_SECONDS, max(0.05, float(retry_after)))
                except ValueError:
                    wait = 1.0
                wait += retry_after_jitter()
            elif reply.status >= 500:
                problem = f"{reply.status} {reply.body!r:.200}"
                failures += 1
                wait = backoff(failures)
            else:
                return reply, attempts
        if time.monotonic() + wait > deadline:
            raise Unanswered(f"{method} {path}: no answer after {attempts} attempts ({problem})")
        time.sleep(wait)


def answer_for(assignment_id: int) -> dict[str, Any]:
    """The box a simulated worker draws: the same object for everyone (workers agree, so no
    one is suspended), shifted by a pixel or two per assignment so that each stored answer can
    be traced to the submission that wrote it."""
    return {"label": "car", "bbox": [10 + assignment_id % 5, 10, 200, 200]}


class CrowdWorker(threading.Thread):
    """One simulated worker: next -> submit until told to stop or, when ``on_empty`` says
    so, until the project has no more work for them."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        project_id: int,
        record: CrowdRecord,
        stop: threading.Event,
        on_empty: Callable[[], bool] = lambda: False,
        name: str,
        give_up_after: float = GIVE_UP_SECONDS,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.conn = Connection(base_url, token)
        self.project_id = project_id
        self.record = record
        self.stop = stop
        self.on_empty = on_empty
        self.give_up_after = give_up_after

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                reply, _ = call_until_answered(
                    self.conn, "POST", f"/api/v1/projects/{self.project_id}/assignments/next/",
                    endpoint="next", record=self.record, give_up_after=self.give_up_after,
                )  # fmt: skip
                if reply.status == 204:
                    if not self.on_empty():
                        return
                    continue
                if reply.status != 201:
                    with self.record.lock:
                        self.record.unexpected.append(("next", reply.status, reply.body))
                    return  # blocked (403) or worse: this worker stops
                self.submit(int(reply.body["id"]))
        except Unanswered as exc:
            with self.record.lock:
                self.record.failures.append(f"{self.name}: {exc}")
        except Exception as exc:  # a bug in the client must show, not end a thread silently
            with self.record.lock:
                self.record.failures.append(f"{self.name}: {type(exc).__name__}: {exc}")
        finally:
            self.conn.close()

    def submit(self, assignment_id: int) -> None:
        key = f"{self.name}-{assignment_id}-{uuid.uuid4().hex[:12]}"
        item = answer_for(assignment_id)
        reply, attempts = call_until_answered(
            self.conn, "POST", f"/api/v1/assignments/{assignment_id}/submit/",
            endpoint="submit", record=self.record, give_up_after=self.give_up_after,
            body={"annotations": [item], "time_spent_ms": 1000},
            headers={"Idempotency-Key": key},
        )  # fmt: skip
        with self.record.lock:
            if reply.status == 200:
                self.record.acked[assignment_id] = Ack(self.name, key, item, reply.body, attempts)
            elif not (reply.status == 409 and _code(reply.body) == "lease_expired"):
                self.record.unexpected.append(("submit", reply.status, reply.body))


def _code(body: Any) -> str:
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def run_crowd(
    *,
    base_url: str,
    tokens: list[str],
    project_id: int,
    record: CrowdRecord,
    stop: threading.Event,
    on_empty: Callable[[], bool] = lambda: False,
) -> list[CrowdWorker]:
    """Start one :class:`CrowdWorker` thread per token; returns them (join them)."""
    workers = [
        CrowdWorker(
            base_url=base_url,
            token=token,
            project_id=project_id,
            record=record,
            stop=stop,
            on_empty=on_empty,
            name=f"w{i}",
        )
        for i, token in enumerate(tokens)
    ]
    for worker in workers:
        worker.start()
    return workers
