"""The pages: HTML shells whose ES modules call the public API and the WebSocket channels.

A view only decides who may open a page (by role, and for a project page whether the
project is theirs, through the same selectors the API uses) and hands the page the ids it
needs as data attributes; every number on a page comes from the API.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie

from crowd.errors import NotFound
from crowd.models import Role, User
from crowd.permissions import request_user
from tasks import selectors

HOME: dict[str, str] = {Role.WORKER: "/work/", Role.MANAGER: "/manage/", Role.CLIENT: "/client/"}

View = Callable[..., HttpResponse]


def page(*roles: str) -> Callable[[View], View]:
    """Signed-in users of these roles only; others are sent to their own home page."""

    def decorate(view: View) -> View:
        @wraps(view)
        @ensure_csrf_cookie
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), "/login/")
            assert isinstance(user, User)
            if user.role not in roles:
                return redirect(HOME.get(user.role, "/"))
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def _own_project(request: HttpRequest, project_id: int) -> None:
    """404 unless the signed-in user may see the project (as the API decides)."""
    user = request_user(request)
    try:
        selectors.project_for_user(user, project_id)
    except NotFound as err:
        raise Http404("No such project.") from err


@ensure_csrf_cookie
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    if user.is_authenticated and isinstance(user, User) and user.role in HOME:
        return redirect(HOME[user.role])
    return render(request, "frontend/home.html")


@ensure_csrf_cookie
def login_page(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/login.html", {"next": _safe_next(request)})


@ensure_csrf_cookie
def signup_page(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/signup.html")


def _safe_next(request: HttpRequest) -> str:
    """Only a local path: never send a signed-in user to another site."""
    target = request.GET.get("next", "")
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


@page(Role.WORKER)
def work(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/work.html")


@page(Role.WORKER)
def workspace(request: HttpRequest, project_id: int) -> HttpResponse:
    _own_project(request, project_id)
    return render(request, "frontend/workspace.html", {"project_id": project_id})


@page(Role.MANAGER)
def manage(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/manage.html")


@page(Role.MANAGER)
def project_new(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/project_new.html")


@page(Role.MANAGER)
def dashboard(request: HttpRequest, project_id: int) -> HttpResponse:
    _own_project(request, project_id)
    return render(
        request,
        "frontend/dashboard.html",
        {"project_id": project_id, "max_upload": settings.MAX_UPLOAD_BYTES},
    )


@page(Role.MANAGER)
def gold(request: HttpRequest, project_id: int) -> HttpResponse:
    _own_project(request, project_id)
    return render(request, "frontend/gold.html", {"project_id": project_id})


@page(Role.MANAGER)
def review(request: HttpRequest, project_id: int) -> HttpResponse:
    _own_project(request, project_id)
    return render(request, "frontend/review.html", {"project_id": project_id})


@page(Role.CLIENT, Role.MANAGER)
def client(request: HttpRequest) -> HttpResponse:
    return render(request, "frontend/client.html")


def annotator_demo(request: HttpRequest) -> HttpResponse:
    """The annotation canvas on a generated image, with no login and no data (`?kind=`)."""
    return render(request, "frontend/annotator_demo.html")
