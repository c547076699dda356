"""Django's ASGI handler with each request's synchronous part on a reused thread, in one
hand-over.

Django runs a request's synchronous code (the view, with its database queries) on a thread
of the request's own: it opens a ``ThreadSensitiveContext`` per request, whose executor
starts a new thread and shuts it down when the response is sent. On the worker's hot path,
with a few milliseconds of work a request, starting and joining that thread was a fifth of
the process's time. Here each request still has a thread to itself for its whole life (so
what Django keeps per thread, such as the database connection, is never shared by two
requests at once), taken from the process's idle ones and given back when it is done.

Django's handler also crosses between the event loop and that thread three times for each
request: for the ``request_started`` receivers, for the view with its middleware, and for
``response.close()`` with the ``request_finished`` receivers; and it starts two tasks to listen
for a disconnect beside the view. Each hand-over wakes the loop and the thread (about as much
processor time as a small view). Here a response that is not streamed is made and closed in
one hand-over and then sent; a streamed one (files) is sent from the loop and closed after,
as Django does, and stops when the client goes away (a disconnect is listened for only
then). A client that goes away before its response is made does not cancel the view: Django
did not either (it runs on its thread to the end), and the response is dropped by the
server.

At most ``WEB_REQUEST_SLOTS`` requests of a process run their synchronous part at once; the
others wait their turn on the loop, first come first served. Thirty requests on thirty
threads take turns at the interpreter lock: each thread that comes back from a database
round trip waits behind the runnable others, so every request's time grows with the crowd
and the slowest wait longest (at 64 clients on two processes, the 99th percentile was three
times the median). A few threads keep the processor busy while some wait on the database,
and a request's time is then mostly its place in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response

# Threads kept idle for the next requests; more are started while more requests run at once.
IDLE_THREADS = 64
# A file is read this much at a time (one hand-over to the request's thread), and sent in
# pieces of the handler's ``chunk_size``.
FILE_BLOCK_BYTES = 1 << 20


async def _parts_in_thread(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    """A synchronous iterator's parts, each taken on the request's thread when wanted."""
    iterator = iter(parts)
    take = sync_to_async(_next_part, thread_sensitive=True)
    while (part := await take(iterator)) is not None:
        yield part


def _next_part(iterator: Iterator[bytes]) -> bytes | None:
    return next(iterator, None)


class ReusedThreadsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []  # touched only on the event loop
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def load_middleware(self, is_async: bool = False) -> None:
        """The middleware and the view as one synchronous chain, entered once from the loop.

        Django runs an asynchronous handler's middleware on the event loop, and each of its
        own (``MiddlewareMixin``) hops into the request's thread for ``process_request`` and
        again for ``process_response``: some fifteen hand-overs between threads for every API
        request, each waking the loop and the thread. Built synchronous, the whole chain runs
        on the request's thread in one hand-over.
        """
        super().load_middleware(is_async=False)
        self._sync_chain = getattr(self, "_middleware_chain")  # noqa: B009
        if is_async:
            chain = getattr(self, "_middleware_chain")  # noqa: B009 - untyped in the stubs
            setattr(self, "_middleware_chain", self.adapt_method_mode(True, chain, False))  # noqa: B010

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # refuses it, as Django does
            return
        executor = (
            self._idle.pop()
            if self._idle
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        )
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self._idle) < IDLE_THREADS:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        try:
            async with self._slot():
                response = await sync_to_async(self._respond, thread_sensitive=True)(
                    scope, body_file
                )
            if not response.streaming:
                await self.send_response(response, send)
                return
            try:
                await self._stream(response, receive, send)
            finally:
                await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    def _slot(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A turn at running a request's synchronous part (none needed with no limit)."""
        limit = settings.WEB_REQUEST_SLOTS
        if not limit:
            return contextlib.nullcontext()
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:  # one per event loop
            self._slots = (loop, asyncio.Semaphore(limit))
        return self._slots[1]

    async def _stream(self, response: HttpResponseBase, receive: Any, send: Any) -> None:
        """Send a streamed response a part at a time until it ends or the client goes.

        Django serves a synchronous iterator (a file) under ASGI by reading it whole into a
        list first: a 2 GB download held 2 GB of memory before its first byte went out. Here
        each part is read on the request's thread when the previous one is sent, so a download
        holds one block (``FILE_BLOCK_BYTES``) at a time, and a client that goes away stops
        the reading."""
        assert isinstance(response, StreamingHttpResponse)
        if not response.is_async:
            parts = cast(Iterable[bytes], response.streaming_content)
            response.streaming_content = _parts_in_thread(parts)
        sending = asyncio.ensure_future(self.send_response(response, send))
        listening = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait((sending, listening), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (listening, sending):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                    await task

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        """On the request's thread: ``request_started``, the request, the view through its
        middleware, and (unless the response streams) ``response.close()``."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error = self.create_request(scope, body_file)
        if request is None:
            assert error is not None
            error.close()
            return error
        set_urlconf(settings.ROOT_URLCONF)
        response = self._sync_chain(request)
        response._resource_closers.append(request.close)
        response._handler_class = self.__class__
        if response.status_code >= 400:
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        if isinstance(response, FileResponse):
            response.block_size = FILE_BLOCK_BYTES
        if not response.streaming:
            response.close()
        return response
