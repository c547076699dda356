"""Rate limits, CSRF, and the security headers and cookie flags of the embedded default and of
production settings (loaded from a production environment in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import override_settings
from django.urls import URLPattern, get_resolver
from rest_framework.test import APIClient

from crowd import csp
from crowd.models import User
from tasks.models import Assignment, Project
from tests.factories import PASSWORD, WorkerFactory, token_for
from tests.security.world import World

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def as_user(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def rate(scope: str) -> int:
    return int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope].split("/")[0])


def assert_throttled(response: Any) -> None:
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


# --- Rate limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "scope", "body"),
    [
        ("/api/v1/auth/token/", "auth", {"username": "nobody", "password": "wrong"}),
        ("/api/v1/auth/login/", "auth", {"username": "nobody", "password": "wrong"}),
        ("/api/v1/auth/register/", "register", {"username": "", "password": ""}),
    ],
)
def test_auth_endpoints_are_throttled_per_address(path: str, scope: str, body: dict) -> None:
    client = APIClient()
    statuses = [client.post(path, body, format="json").status_code for _ in range(rate(scope))]
    assert 429 not in statuses
    assert_throttled(client.post(path, body, format="json"))
    # Another address is not held back.
    other = APIClient(REMOTE_ADDR="10.0.0.2")
    assert other.post(path, body, format="json").status_code == 400


def test_next_is_throttled_per_worker(world: World) -> None:
    url = f"/api/v1/projects/{world.a.project.pk}/assignments/next/"
    client = as_user(world.a.worker)
    limit = rate("next")
    assert limit >= 60  # a worker who finishes a task a second never meets it
    statuses = {client.post(url).status_code for _ in range(limit)}
    assert statuses == {201}  # the open lease, again and again
    assert_throttled(client.post(url))
    leases = Assignment.objects.filter(worker=world.a.worker, status="leased").count()
    assert leases == 1
    # Per worker, not per address: another worker from the same address still gets work.
    assert as_user(WorkerFactory.create()).post(url).status_code == 201


# --- CSRF -------------------------------------------------------------------------------------


def logged_in_browser(user: User) -> APIClient:
    browser = APIClient(enforce_csrf_checks=True)
    response = browser.post(
        "/api/v1/auth/login/", {"username": user.username, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    return browser


NEW_PROJECT = {"name": "Birds", "kind": "classification", "labels": ["owl", "hawk"]}


def test_a_session_write_needs_the_csrf_token(manager: User) -> None:
    browser = logged_in_browser(manager)
    refused = browser.post("/api/v1/projects/", NEW_PROJECT, format="json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not Project.objects.exists()
    wrong = browser.post("/api/v1/projects/", NEW_PROJECT, format="json", HTTP_X_CSRFTOKEN="x" * 64)
    assert wrong.status_code == 403
    token = browser.cookies["csrftoken"].value
    accepted = browser.post("/api/v1/projects/", NEW_PROJECT, format="json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201
    assert Project.objects.count() == 1
    # Reads need no token.
    assert browser.get("/api/v1/projects/").status_code == 200


def test_a_token_write_needs_no_csrf_token(manager: User) -> None:
    script = APIClient(enforce_csrf_checks=True)
    script.credentials(HTTP_AUTHORIZATION=f"Token {token_for(manager)}")
    assert script.post("/api/v1/projects/", NEW_PROJECT, format="json").status_code == 201


def test_session_cookie_flags(manager: User) -> None:
    browser = logged_in_browser(manager)
    session = browser.cookies["sessionid"]
    assert session["httponly"]
    assert session["samesite"] == "Lax"
    # The embedded default serves plain http on localhost: secure cookies only when configured.
    assert not session["secure"]
    assert not browser.cookies["csrftoken"]["secure"]
    with override_settings(SESSION_COOKIE_SECURE=True, CSRF_COOKIE_SECURE=True):
        browser = logged_in_browser(manager)
    assert browser.cookies["sessionid"]["secure"]
    assert browser.cookies["sessionid"]["httponly"]
    assert browser.cookies["csrftoken"]["secure"]


# --- Headers ----------------------------------------------------------------------------------


def test_security_headers_on_api_responses() -> None:
    response = APIClient().get("/api/v1/me/")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Content-Security-Policy"] == csp.POLICY
    # No HSTS over plain http, nor in the embedded default at all.
    assert "Strict-Transport-Security" not in response
    assert "Strict-Transport-Security" not in APIClient().get("/api/v1/me/", secure=True)


def test_the_page_policy() -> None:
    directives = dict(d.split(" ", 1) for d in csp.POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' blob: data:"
    assert directives["connect-src"] == "'self' ws: wss:"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"


def _pages() -> list[str]:
    from frontend import urls

    return [str(p.pattern) for p in urls.urlpatterns if isinstance(p, URLPattern)]


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>\s*\S", re.IGNORECASE)
HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
STYLE = re.compile(r"<style\b|\sstyle\s*=", re.IGNORECASE)


def test_every_page_is_served_under_the_policy_and_fits_it(world: World) -> None:
    """The pages carry the policy, and nothing in them needs more: no inline scripts, event
    handler attributes or inline styles (a browser under the policy would refuse them)."""
    assert get_resolver().resolve("/")  # the pages are mounted
    checked = []
    for role, user in (("anonymous", None), ("worker", world.a.worker), ("manager", world.a.owner),
                       ("client", world.a.client)):  # fmt: skip
        client = APIClient()
        if user:
            client.force_login(user)
        for pattern in _pages():
            url = "/" + re.sub(r"<(?:\w+:)?\w+>", str(world.a.project.pk), pattern)
            response = client.get(url)
            assert response["Content-Security-Policy"] == csp.POLICY, url
            if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
                continue
            html = response.content.decode()
            problems = [name for name, rx in (("inline script", INLINE_SCRIPT), ("event handler", HANDLER),
                                              ("inline style", STYLE)) if rx.search(html)]  # fmt: skip
            assert not problems, f"{url} as {role}: {problems}"
            checked.append(url)
    assert "/" in checked


def test_the_api_docs_work_under_their_policy() -> None:
    client = APIClient()
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    policy = dict(d.split(" ", 1) for d in docs["Content-Security-Policy"].split("; "))
    assert policy["script-src"] == "'self'"  # Swagger UI's start-up script is a file too
    html = docs.content.decode()
    assert not INLINE_SCRIPT.search(html)
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert sources
    for source in sources:
        assert source.startswith("/"), f"{source} is not served from this origin"
        if source.startswith(settings.STATIC_URL):
            # Static files are served by whitenoise once collected; here, they must exist.
            assert finders.find(source.removeprefix(settings.STATIC_URL)), source
        else:
            fetched = client.get(source.replace("&amp;", "&"))
            assert fetched.status_code == 200, source
            assert fetched["Content-Type"].startswith("application/javascript")
    redoc = client.get("/api/redoc/")
    assert redoc.status_code == 200
    html = redoc.content.decode()
    for source in re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html):
        assert source.startswith(settings.STATIC_URL), source  # no web fonts from elsewhere
        assert finders.find(source.removeprefix(settings.STATIC_URL)), source
    # Everything the page's bundle fetches from elsewhere is allowed by its policy.
    bundle = finders.find("drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js")
    assert bundle is not None
    origins = set(re.findall(r'src:"(https://[^/"]+)', Path(bundle).read_text(encoding="utf-8")))
    policy = dict(p.strip().split(" ", 1) for p in redoc["Content-Security-Policy"].split(";"))
    assert origins
    assert all(origin in policy["img-src"] for origin in origins), origins


# --- Production settings, loaded from the environment -----------------------------------------

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client()
schema = client.get("/api/schema/", secure=True)
login_form = client.get("/api/v1/auth/login/", secure=True)  # sets the CSRF cookie
csrf = login_form.cookies["csrftoken"]
print(json.dumps({
    "debug": settings.DEBUG,
    "session_secure": settings.SESSION_COOKIE_SECURE,
    "session_httponly": settings.SESSION_COOKIE_HTTPONLY,
    "csrf_secure": settings.CSRF_COOKIE_SECURE,
    "next_rate": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["next"],
    "headers": {k: schema.get(k) for k in ("Strict-Transport-Security", "X-Content-Type-Options",
        "Referrer-Policy", "X-Frame-Options", "Content-Security-Policy")},
    "csrf_cookie_secure": bool(csrf["secure"]),
}))
"""


def load_settings(tmp_path: Path, **environment: str) -> dict[str, Any]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECURE_COOKIES")
    }
    env.update(DJANGO_SETTINGS_MODULE="crowd.settings", VAR_DIR=str(tmp_path), **environment)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_production_environment(tmp_path: Path) -> None:
    got = load_settings(
        tmp_path, DEBUG="false", SECURE_COOKIES="true", SECRET_KEY="x" * 50,
        ALLOWED_HOSTS="testserver,crowd.example.org", THROTTLE_NEXT="90/minute",
    )  # fmt: skip
    assert got["debug"] is False
    assert got["session_secure"]
    assert got["session_httponly"]
    assert got["csrf_secure"]
    assert got["csrf_cookie_secure"]
    assert got["next_rate"] == "90/minute"
    headers = got["headers"]
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"] == csp.POLICY


def test_embedded_default_environment(tmp_path: Path) -> None:
    got = load_settings(tmp_path, ALLOWED_HOSTS="testserver")
    assert not got["session_secure"]
    assert not got["csrf_secure"]
    assert not got["csrf_cookie_secure"]
    assert got["session_httponly"]
    assert got["next_rate"] == "120/minute"
    assert got["headers"]["Strict-Transport-Security"] is None  # never pin plain-http localhost
    assert got["headers"]["Content-Security-Policy"] == csp.POLICY
    assert got["headers"]["X-Frame-Options"] == "DENY"
