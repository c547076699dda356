"""API routes answer with or without their trailing slash, for every method.

Django's ``APPEND_SLASH`` answers a path without the slash with a redirect, and a client that
follows a 301 (or 302) after a POST, PUT or PATCH sends the repeat without its body, so
``curl -L`` on ``POST /api/v1/projects`` ended in a misleading 400. Under ``/api/``, a path
that names no route but whose slashed form does is served as that route instead: same view,
same body, no redirect. Pages keep Django's redirect, which suits browsers.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import is_valid_path
from django.utils.deprecation import MiddlewareMixin


class ApiSlashMiddleware(MiddlewareMixin):
    def process_request(self, request: HttpRequest) -> None:
        path = request.path_info
        if not path.startswith("/api/") or path.endswith("/"):
            return
        urlconf = getattr(request, "urlconf", None)
        if not is_valid_path(path, urlconf) and is_valid_path(f"{path}/", urlconf):
            request.path_info = f"{path}/"
            request.path = f"{request.path}/"
