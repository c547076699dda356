"""Django's ASGI handler with each request's synchronous part on a reused thread.

Django runs a request's synchronous code (the view, with its database queries) on a thread
of the request's own: it opens a ``ThreadSensitiveContext`` per request, whose executor
starts a new thread and shuts it down when the response is sent. On the worker's hot path,
with a few milliseconds of work a request, starting and joining that thread was a fifth of
the process's time. Here each request still has a thread to itself for its whole life (so
what Django keeps per thread, such as the database connection, is never shared by two
requests at once), taken from the process's idle ones and given back when it is done.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

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
