"""Static files for an ASGI server without a thread hop on every other request.

WhiteNoise's middleware is synchronous only. In an ASGI process Django then runs the chain
around it in a thread and hops back to the event loop for the middleware within, then into
a thread again for the view: three hand-overs between threads for every API request, static
or not. This one is also asynchronous (as Django's own middleware is, chosen by what it
wraps): an API request passes straight through to the next middleware, and the whole chain
costs one hand-over (the view's).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None) -> None:
        super().__init__(get_response)
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self._is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:  # development: looks for the file on disk
            static_file: Any = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)  # opens the file
        response: HttpResponseBase = await self.get_response(request)
        return response
