"""The token's user cached in Redis, as with ``REDIS_URL`` set: the entry survives the trip
through Redis, and a rotation or a deactivation is refused on the very next request."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from crowd.models import User
from crowd.tokens import _cache_key
from tests.factories import token_for
from tests.plugins.services import Server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

ME = "/api/v1/me/"


@pytest.fixture(autouse=True)
def _redis_cache(settings, redis_server: Server) -> None:
    # A prefix of its own per test: nothing to clear, and no other test's keys touched.
    settings.CACHES = {
        "default": {
            "BACKEND": "crowd.cache.FailOpenRedisCache",
            "LOCATION": redis_server.url,
            "KEY_PREFIX": f"crowd-test-{uuid.uuid4().hex[:8]}",
        }
    }
    settings.TOKEN_CACHE_SECONDS = 60


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_cached_token_reads_no_row_and_answers_the_same(worker: User) -> None:
    key = token_for(worker)
    first = with_token(key).get(ME)
    assert isinstance(cache.get(_cache_key(key)), tuple)
    with CaptureQueriesContext(connection) as queries:
        again = with_token(key).get(ME)
    assert (again.status_code, again.json()) == (200, first.json())
    assert not [q for q in queries if "authtoken_token" in q["sql"]]


def test_rotation_and_deactivation_are_seen_on_the_next_request(worker: User) -> None:
    old = token_for(worker)
    client = with_token(old)
    assert client.get(ME).status_code == 200
    new = client.post("/api/v1/auth/token/rotate/").json()["token"]
    assert with_token(old).get(ME).status_code == 401
    fresh = with_token(new)
    assert fresh.get(ME).status_code == 200
    worker.is_active = False
    worker.save()
    response = fresh.get(ME)
    assert response.status_code == 401
    assert response.json()["detail"] == "User inactive or deleted."
