"""The ASGI handler: one hand-over to the request's thread for a response that is not
streamed, Django's order of signals, streamed files closed after they are sent, and the
request thread reused."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core import signals
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from crowd.handlers import FILE_BLOCK_BYTES, ReusedThreadsASGIHandler

events: list[tuple[str, int]] = []


@csrf_exempt
def _plain(request: HttpRequest) -> HttpResponse:
    events.append(("view", threading.get_ident()))
    return JsonResponse({"ok": True, "body": request.body.decode()})


class _TrackedFile(io.BytesIO):
    read_bytes = 0  # by every instance: what the handler took from files

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        _TrackedFile.read_bytes += len(data)
        return data

    def close(self) -> None:
        events.append(("file closed", threading.get_ident()))
        super().close()


def _file(request: HttpRequest) -> FileResponse:
    events.append(("view", threading.get_ident()))
    return FileResponse(_TrackedFile(b"x" * 200_000), content_type="application/octet-stream")


def _missing(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def _broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("view failed")


running: list[str] = []
release = threading.Event()


def _held(request: HttpRequest) -> HttpResponse:
    """Stays in its slot until ``release`` is set."""
    name = request.GET["n"]
    running.append(name)
    events.append((f"view {name}", threading.get_ident()))
    release.wait(timeout=10)
    running.remove(name)
    return JsonResponse({"n": name})


def _long_file(request: HttpRequest) -> FileResponse:
    return FileResponse(_TrackedFile(b"y" * 50_000_000), content_type="application/octet-stream")


urlpatterns = [
    path("plain/", _plain),
    path("file/", _file),
    path("long-file/", _long_file),
    path("missing/", _missing),
    path("broken/", _broken),
    path("held/", _held),
]


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self.submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(*args, **kwargs)


@pytest.fixture
def handler(settings: Any) -> Iterator[tuple[ReusedThreadsASGIHandler, CountingExecutor]]:
    settings.ROOT_URLCONF = __name__
    settings.ALLOWED_HOSTS = ["testserver"]
    events.clear()

    def started(**kwargs: Any) -> None:
        events.append(("started", threading.get_ident()))

    def finished(**kwargs: Any) -> None:
        events.append(("finished", threading.get_ident()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    app = ReusedThreadsASGIHandler()
    executor = CountingExecutor()
    app._idle.append(executor)
    yield app, executor
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)
    executor.shutdown()


async def _call(
    app: ReusedThreadsASGIHandler,
    route: str,
    body: bytes = b"",
    method: str = "GET",
    query: bytes = b"",
) -> tuple[int, dict[bytes, bytes], bytes, list[dict[str, Any]]]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": route, "raw_path": route.encode(), "query_string": query,
        "root_path": "", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # as a server does: nothing more until the client goes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            events.append(("sent body", threading.get_ident()))
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), content, sent


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_at_most_the_slots_run_at_once_and_the_rest_in_arrival_order(
    handler: Any, settings: Any
) -> None:
    settings.WEB_REQUEST_SLOTS = 2
    app, _ = handler
    release.clear()
    calls = []
    for n in range(5):
        calls.append(asyncio.ensure_future(_call(app, "/held/", query=f"n={n}".encode())))
        await asyncio.sleep(0.02)  # they arrive in this order
    await _until(lambda: len(running) == 2)
    await asyncio.sleep(0.1)
    assert sorted(running) == ["0", "1"]  # the other three wait for a slot, on no thread
    release.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), timeout=10)
    assert [a[0] for a in answers] == [200] * 5
    views = [name for name, _ in events if name.startswith("view ")]
    assert views == [f"view {n}" for n in range(5)]


async def test_with_no_limit_every_request_runs_at_once(handler: Any, settings: Any) -> None:
    settings.WEB_REQUEST_SLOTS = 0
    app, _ = handler
    release.clear()
    calls = [asyncio.ensure_future(_call(app, "/held/", query=f"n={n}".encode())) for n in range(5)]
    await _until(lambda: len(running) == 5)
    release.set()
    answers = await asyncio.wait_for(asyncio.gather(*calls), timeout=10)
    assert [a[0] for a in answers] == [200] * 5


async def test_a_response_is_made_and_closed_in_one_hand_over(handler: Any) -> None:
    app, executor = handler
    loop_thread = threading.get_ident()
    status, headers, content, _ = await _call(app, "/plain/", b"hello", method="POST")
    assert status == 200
    assert headers[b"Content-Type"] == b"application/json"
    assert content == b'{"ok": true, "body": "hello"}'
    assert executor.submitted == 1
    names = [name for name, _ in events]
    assert names == ["started", "view", "finished", "sent body"]
    threads = {thread for name, thread in events if name != "sent body"}
    assert len(threads) == 1
    assert loop_thread not in threads


async def test_the_request_thread_is_reused(handler: Any) -> None:
    app, executor = handler
    await _call(app, "/plain/")
    await _call(app, "/plain/")
    assert executor.submitted == 2
    views = [thread for name, thread in events if name == "view"]
    assert len(views) == 2
    assert views[0] == views[1]


async def test_a_streamed_file_is_closed_after_it_is_sent(handler: Any) -> None:
    app, _ = handler
    status, _, content, sent = await _call(app, "/file/")
    assert status == 200
    assert content == b"x" * 200_000
    assert len(sent) > 2  # in chunks
    names = [name for name, _ in events]
    assert names[:2] == ["started", "view"]
    # Every chunk goes out before the file is closed and request_finished is sent.
    last_body = max(i for i, name in enumerate(names) if name == "sent body")
    assert names.index("file closed") > last_body
    assert names.index("finished") > last_body


async def test_an_error_status_is_logged_as_django_does(
    handler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = handler
    with caplog.at_level(logging.WARNING, logger="django.request"):
        status, _, content, _ = await _call(app, "/missing/")
    assert status == 404
    assert content == b'{"detail": "Not found."}'
    assert [r.getMessage() for r in caplog.records] == ["Not Found: /missing/"]


async def test_a_failing_view_answers_500_and_finishes_the_request(
    handler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = handler
    with caplog.at_level(logging.ERROR, logger="django.request"):
        status, _, _, _ = await _call(app, "/broken/")
    assert status == 500
    assert [name for name, _ in events] == ["started", "finished", "sent body"]
    assert any("view failed" in str(r.exc_info) for r in caplog.records)


async def test_a_streamed_file_stops_when_the_client_goes_and_is_closed(handler: Any) -> None:
    """A client that goes away while a large file is on its way: reading and sending stop
    (the rest of the file is not read to be dropped by the server; Django reads the whole
    file into memory before its first byte is sent), and the file is closed, with
    request_finished sent, as after a whole response."""
    app, _ = handler
    _TrackedFile.read_bytes = 0
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/long-file/", "raw_path": b"/long-file/", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }  # fmt: skip
    gone = asyncio.Event()
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    chunks = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal chunks
        if message["type"] == "http.response.body":
            chunks += 1
            if chunks == 3:
                gone.set()
            await asyncio.sleep(0)  # a server's send yields to the loop

    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    total = 50_000_000 // app.chunk_size
    assert 3 <= chunks < total // 2, (chunks, total)
    assert _TrackedFile.read_bytes <= 4 * FILE_BLOCK_BYTES
    names = [name for name, _ in events]
    assert "file closed" in names
    assert names[-1] == "finished"
