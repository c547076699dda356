from __future__ import annotations

import pytest
from django.db import OperationalError
from django.test import override_settings
from rest_framework.exceptions import NotAuthenticated, ValidationError
from rest_framework.test import APIClient

from crowd.errors import Conflict, InvalidInput, exception_handler


def test_domain_errors_map_to_their_status_and_shape() -> None:
    response = exception_handler(Conflict("Lease expired.", code="lease_expired"), {})
    assert response is not None
    assert response.status_code == 409
    assert response.data == {"detail": "Lease expired.", "code": "lease_expired", "errors": {}}
    response = exception_handler(InvalidInput(errors={"labels": ["Duplicate label."]}), {})
    assert response is not None
    assert response.status_code == 400
    assert response.data["errors"] == {"labels": ["Duplicate label."]}


def test_drf_errors_are_reshaped() -> None:
    response = exception_handler(ValidationError(["not a dict"]), {})
    assert response is not None
    assert response.data == {
        "detail": "Invalid input.",
        "code": "invalid",
        "errors": {"non_field_errors": ["not a dict"]},
    }
    response = exception_handler(NotAuthenticated(), {})
    assert response is not None
    assert response.data["code"] == "not_authenticated"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/projects/", "/api/v1/me/", "/api/v1/me/ledger/"])
def test_an_unknown_format_is_a_json_404_naming_it(manager, api_as, path) -> None:
    response = api_as(manager).get(f"{path}?format=xml")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "No such format 'xml': this API answers JSON.",
        "code": "not_found",
        "errors": {},
    }


def test_djangos_own_404_and_403_get_the_error_shape() -> None:
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    response = exception_handler(Http404(), {})
    assert response is not None
    assert (response.status_code, response.data["code"]) == (404, "not_found")
    response = exception_handler(PermissionDenied(), {})
    assert response is not None
    assert (response.status_code, response.data["code"]) == (403, "permission_denied")


def test_a_lost_database_is_a_503_with_retry_after() -> None:
    response = exception_handler(OperationalError("server closed the connection"), {})
    assert response is not None
    assert response.status_code == 503
    assert response.data["code"] == "unavailable"
    assert response["Retry-After"]


@pytest.mark.django_db
@pytest.mark.both_databases
def test_healthz_checks_the_database_and_the_channel_layer() -> None:
    from django.db import connection

    response = APIClient().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {
        "ok": True,
        "vendor": connection.vendor,
        "ms": body["database"]["ms"],
    }
    assert body["channel_layer"]["ok"] is True
    assert body["channel_layer"]["backend"] == "EmbeddedChannelLayer"


@pytest.mark.django_db
def test_healthz_reports_a_broken_database_as_503(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db.backends.utils import CursorWrapper

    def broken(self: object, sql: str, params: object = None) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", broken)
    response = APIClient().get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == {
        "ok": False,
        "vendor": response.json()["database"]["vendor"],
        "error": "OperationalError",
    }


def test_healthz_reports_an_unreachable_channel_layer_as_503(db: None) -> None:
    unreachable = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Nothing listens on port 1: the connection is refused at once.
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    with override_settings(CHANNEL_LAYERS=unreachable):
        response = APIClient().get("/healthz")
    assert response.status_code == 503
    assert response.json()["channel_layer"]["ok"] is False


def test_api_schema_and_docs_are_served_without_a_cdn(db: None) -> None:
    client = APIClient()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/v1/auth/register/", "/api/v1/auth/token/", "/api/v1/me/"):
        assert path in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr" not in html
    assert "unpkg.com" not in html


@pytest.mark.django_db
def test_an_oversized_json_body_is_a_json_413(settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = APIClient().post(
        "/api/v1/auth/register/", {"username": "x" * 5000, "password": "y"}, format="json"
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
