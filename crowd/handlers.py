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
as Django does. A client that goes away mid-request no longer cancels the waiting: the view
was not cancelled before either (it runs on its thread to the end), and what is sent to a
closed connection is dropped by the server.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponseBase
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response

# Threads kept idle for the next requests; more are started while more requests run at once.
IDLE_THREADS = 64


class ReusedThreadsASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []  # touched only on the event loop

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
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:
                    await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

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
            response.block_size = self.chunk_size
        if not response.streaming:
            response.close()
        return response
