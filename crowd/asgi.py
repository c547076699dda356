"""ASGI entry point: HTTP through Django, WebSocket through Channels with authentication."""

from __future__ import annotations

import gc
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowd.settings")
# Django must be set up before anything imports models (the consumers below do).
django.setup(set_prefix=False)

from crowd.handlers import ReusedThreadsASGIHandler  # noqa: E402

django_asgi_app = ReusedThreadsASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from crowd.live import remember_loop  # noqa: E402
from crowd.logs import redact_server_logs  # noqa: E402
from crowd.ws import auth_stack, origin_checked  # noqa: E402
from tasks.consumers import ProjectConsumer, WorkerConsumer  # noqa: E402

websocket_urlpatterns = [
    path("ws/worker/", WorkerConsumer.as_asgi()),
    path("ws/projects/<int:project_id>/", ProjectConsumer.as_asgi()),
]

redact_server_logs()

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_checked(auth_stack(URLRouter(websocket_urlpatterns))),
    }
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The router, behind a note of the server's event loop: live frames published from
    other threads are handed to it (``crowd.live``)."""
    remember_loop()
    await router(scope, receive, send)


# What is loaded by now (Django, the apps, the URL conf) lives as long as the process: moving
# it out of the cyclic collector's reach keeps full collections, which stop the event loop
# and every live frame with it, proportional to what requests and connections allocate.
gc.freeze()
