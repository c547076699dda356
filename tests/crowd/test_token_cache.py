"""The token's user from the cache (crowd/tokens.py): a known token costs no query, and every
change to what the entry answers is seen by the very next request."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from crowd.models import Role, User
from crowd.tokens import _cache_key, token_forget
from qa.services import worker_reinstate, worker_suspend
from tests.factories import PASSWORD, project_with_tasks, token_for

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

ME = "/api/v1/me/"


@pytest.fixture(autouse=True)
def _token_cache(settings) -> None:
    settings.TOKEN_CACHE_SECONDS = 60


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def cached(key: str) -> bool:
    return isinstance(cache.get(_cache_key(key)), tuple)


def warm(user: User) -> tuple[str, APIClient]:
    """The user's token, used once so that the cache holds its user."""
    key = token_for(user)
    client = with_token(key)
    assert client.get(ME).status_code == 200
    assert cached(key)
    return key, client


def token_queries(request: Callable[[], object]) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        request()
    return [q["sql"] for q in queries if "authtoken_token" in q["sql"] or "crowd_user" in q["sql"]]


def test_a_cached_token_reads_neither_token_nor_user(worker: User) -> None:
    _, client = warm(worker)
    assert token_queries(lambda: client.get(ME)) == []


def test_the_cached_user_answers_as_the_database_does(worker: User) -> None:
    key = token_for(worker)
    first = with_token(key).get(ME)
    again = with_token(key).get(ME)
    assert (again.status_code, again.json()) == (200, first.json())


def test_without_the_setting_nothing_is_cached(settings, worker: User) -> None:
    settings.TOKEN_CACHE_SECONDS = 0
    key = token_for(worker)
    assert with_token(key).get(ME).status_code == 200
    assert cache.get(_cache_key(key)) is None
    assert token_queries(lambda: with_token(key).get(ME))


def test_the_cache_holds_a_digest_of_the_token_and_no_password(worker: User) -> None:
    key, _ = warm(worker)
    assert key not in _cache_key(key)
    entry = cache.get(_cache_key(key))
    assert worker.password not in entry


def test_rotation_refuses_the_old_token_on_the_next_request(worker: User) -> None:
    old, client = warm(worker)
    new = client.post("/api/v1/auth/token/rotate/").json()["token"]
    response = with_token(old).get(ME)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."
    assert with_token(new).get(ME).status_code == 200


@pytest.mark.parametrize("how", ["token", "user"])
def test_a_deleted_token_or_user_is_refused(worker: User, how: str) -> None:
    key, client = warm(worker)
    if how == "token":
        Token.objects.filter(key=key).delete()
    else:
        worker.delete()
    response = client.get(ME)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Invalid token.",
        "code": "authentication_failed",
        "errors": {},
    }


def test_deactivation_refuses_the_token_on_the_next_request(worker: User) -> None:
    key, client = warm(worker)
    worker.is_active = False
    worker.save()
    response = client.get(ME)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "User inactive or deleted.",
        "code": "authentication_failed",
        "errors": {},
    }
    assert not cached(key)


def test_a_role_change_applies_on_the_next_request(manager: User, worker: User) -> None:
    project = project_with_tasks(manager, tasks=2, overlap=1)
    next_url = f"/api/v1/projects/{project.pk}/assignments/next/"
    _, client = warm(worker)
    assert client.get(ME).json()["role"] == "worker"
    worker.role = Role.CLIENT
    worker.save(update_fields=["role"])
    assert client.get(ME).json()["role"] == "client"
    response = client.post(next_url)
    assert response.status_code == 403
    assert response.json()["detail"] == "Only workers can do this."


def test_a_password_change_drops_the_entry(worker: User) -> None:
    key, client = warm(worker)
    worker.set_password("another-long-password")
    worker.save(update_fields=["password"])
    assert not cached(key)
    assert client.get(ME).status_code == 200


def test_a_log_in_keeps_the_entry(worker: User) -> None:
    key, _ = warm(worker)
    browser = APIClient()
    login = browser.post("/api/v1/auth/login/", {"username": worker.username, "password": PASSWORD})
    assert login.status_code == 200
    assert cached(key)


def test_log_out_drops_the_entry(worker: User) -> None:
    key, client = warm(worker)
    assert client.post("/api/v1/auth/logout/").status_code == 204
    assert not cached(key)


def test_suspension_and_reinstatement_apply_on_the_next_request(
    manager: User, worker: User
) -> None:
    project = project_with_tasks(manager, tasks=3, overlap=1)
    next_url = f"/api/v1/projects/{project.pk}/assignments/next/"
    key, client = warm(worker)
    assert client.post(next_url).status_code == 201
    assert cached(key)
    worker_suspend(project=project, worker_id=worker.pk, by=manager, reason="Random boxes.")
    assert not cached(key)
    refused = client.post(next_url)
    assert refused.status_code == 403
    assert "Random boxes." in refused.json()["detail"]
    worker_reinstate(project=project, worker_id=worker.pk, by=manager)
    assert not cached(key)
    assert client.post(next_url).status_code == 201


def test_a_user_read_before_a_change_is_not_cached_after_it(worker: User) -> None:
    """A request that read the user before the change, and stores them after the drop,
    must not put the old copy back."""
    key = token_for(worker)
    token_forget(key=key)
    assert with_token(key).get(ME).status_code == 200
    assert not cached(key)
    assert cache.get(_cache_key(key)) == "gone"


def test_bad_headers_are_refused_as_before(worker: User) -> None:
    token_for(worker)
    for header, detail in [
        ("Token", "Invalid token header. No credentials provided."),
        ("Token a b", "Invalid token header. Token string should not contain spaces."),
        ("Token not-a-real-token", "Invalid token."),
    ]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        response = client.get(ME)
        assert response.status_code == 401, header
        assert response.json()["detail"] == detail
        assert response["WWW-Authenticate"] == "Token"
