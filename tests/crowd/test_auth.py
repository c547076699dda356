from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from crowd.models import Role, User
from tests.factories import PASSWORD, ManagerFactory, WorkerFactory

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

GOOD = {"username": "ada", "password": "correct-horse-battery", "email": "ada@example.org"}


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}
    if code:
        assert body["code"] == code
    return body


class TestRegister:
    def test_creates_a_worker(self, api: APIClient) -> None:
        response = api.post("/api/v1/auth/register/", GOOD, format="json")
        assert response.status_code == 201
        body = response.json()
        assert body == {"id": body["id"], "username": "ada", "role": "worker"}
        user = User.objects.get(pk=body["id"])
        assert user.role == Role.WORKER
        assert user.password != GOOD["password"]
        assert user.check_password(GOOD["password"])

    def test_role_cannot_be_chosen(self, api: APIClient) -> None:
        response = api.post("/api/v1/auth/register/", {**GOOD, "role": "manager"}, format="json")
        assert response.status_code == 201
        assert response.json()["role"] == "worker"

    def test_username_taken_regardless_of_case(self, api: APIClient) -> None:
        assert api.post("/api/v1/auth/register/", GOOD, format="json").status_code == 201
        again = api.post("/api/v1/auth/register/", {**GOOD, "username": "ADA"}, format="json")
        body = assert_error(again, 400, "invalid")
        assert "username" in body["errors"]
        assert User.objects.count() == 1

    def test_case_insensitive_uniqueness_is_a_database_constraint(self) -> None:
        from django.db import IntegrityError, transaction

        User.objects.create(username="grace")
        with pytest.raises(IntegrityError), transaction.atomic():
            User.objects.create(username="GRACE")

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"password": "123"}, "password"),
            ({"password": "ada"}, "password"),
            ({"email": "not-an-email"}, "email"),
            ({"username": "has spaces!"}, "username"),
            ({"username": ""}, "username"),
            ({"username": ["list"]}, "username"),
            ({"password": None}, "password"),
        ],
    )
    def test_bad_input_is_a_400_naming_the_field(
        self, api: APIClient, change: dict, field: str
    ) -> None:
        response = api.post("/api/v1/auth/register/", {**GOOD, **change}, format="json")
        body = assert_error(response, 400, "invalid")
        assert field in body["errors"]
        assert not User.objects.exists()

    def test_malformed_json_is_a_400(self, api: APIClient) -> None:
        response = api.post(
            "/api/v1/auth/register/", data=b'{"username": ', content_type="application/json"
        )
        assert_error(response, 400, "parse_error")

    def test_repeated_sign_ups_are_throttled(self, api: APIClient) -> None:
        statuses = [
            api.post(
                "/api/v1/auth/register/", {**GOOD, "username": f"u{i}"}, format="json"
            ).status_code
            for i in range(12)
        ]
        assert statuses[:10] == [201] * 10
        assert statuses[-1] == 429


class TestToken:
    def test_token_for_good_credentials_and_the_same_one_again(self, api: APIClient) -> None:
        user = WorkerFactory.create(username="lin")
        first = api.post("/api/v1/auth/token/", {"username": "lin", "password": PASSWORD})
        assert first.status_code == 200
        assert set(first.json()) == {"token"}
        second = api.post("/api/v1/auth/token/", {"username": "LIN", "password": PASSWORD})
        assert second.json()["token"] == first.json()["token"]
        assert user.auth_token.key == first.json()["token"]

    @pytest.mark.parametrize(
        "credentials",
        [
            {"username": "lin", "password": "wrong-password"},
            {"username": "nobody", "password": "x"},
        ],
    )
    def test_bad_credentials_say_the_same_thing(self, api: APIClient, credentials: dict) -> None:
        WorkerFactory.create(username="lin")
        body = assert_error(api.post("/api/v1/auth/token/", credentials), 400)
        assert body["code"] == "invalid_credentials"

    def test_inactive_user_gets_no_token(self, api: APIClient) -> None:
        WorkerFactory.create(username="lin", is_active=False)
        response = api.post("/api/v1/auth/token/", {"username": "lin", "password": PASSWORD})
        assert_error(response, 400, "invalid_credentials")

    def test_rotation_retires_the_old_token(self, api_as, worker: User) -> None:
        client = api_as(worker)
        old = worker.auth_token.key
        new = client.post("/api/v1/auth/token/rotate/").json()["token"]
        assert new != old
        stale = APIClient()
        stale.credentials(HTTP_AUTHORIZATION=f"Token {old}")
        assert stale.get("/api/v1/me/").status_code == 401
        fresh = APIClient()
        fresh.credentials(HTTP_AUTHORIZATION=f"Token {new}")
        assert fresh.get("/api/v1/me/").status_code == 200


class TestMe:
    def test_me_with_a_token(self, api_as, worker: User) -> None:
        response = api_as(worker).get("/api/v1/me/")
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == worker.pk
        assert body["username"] == worker.username
        assert body["role"] == "worker"
        assert body["balance"] == {"amount": "0.00", "currency": "USD"}
        assert "score" in body

    def test_anonymous_gets_401_with_a_challenge(self, api: APIClient) -> None:
        response = api.get("/api/v1/me/")
        assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"] == "Token"

    def test_bad_token_gets_401(self, api: APIClient) -> None:
        api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
        assert_error(api.get("/api/v1/me/"), 401, "authentication_failed")

    def test_session_log_in_and_out(self, worker: User) -> None:
        browser = APIClient(enforce_csrf_checks=True)
        login = browser.post(
            "/api/v1/auth/login/", {"username": worker.username, "password": PASSWORD}
        )
        assert login.status_code == 200
        assert login.json()["username"] == worker.username
        assert "csrftoken" in login.cookies
        assert browser.get("/api/v1/me/").json()["id"] == worker.pk
        # A session-authenticated write needs the CSRF token; with it, log-out works.
        assert browser.post("/api/v1/auth/logout/").status_code == 403
        csrf = browser.cookies["csrftoken"].value
        assert browser.post("/api/v1/auth/logout/", HTTP_X_CSRFTOKEN=csrf).status_code == 204
        assert browser.get("/api/v1/me/").status_code == 401


class TestRoles:
    def test_worker_cannot_reach_manager_endpoints(self, api_as, worker: User) -> None:
        response = api_as(worker).post(
            "/api/v1/clients/", {**GOOD, "username": "acme"}, format="json"
        )
        body = assert_error(response, 403, "permission_denied")
        assert "managers" in body["detail"]
        assert not User.objects.filter(username="acme").exists()

    def test_client_cannot_reach_manager_endpoints(self, api_as, client_user: User) -> None:
        response = api_as(client_user).post("/api/v1/clients/", GOOD, format="json")
        assert_error(response, 403)

    def test_anonymous_gets_401_on_manager_endpoints(self, api: APIClient) -> None:
        assert_error(api.post("/api/v1/clients/", GOOD, format="json"), 401)

    def test_manager_creates_a_client(self, api_as) -> None:
        manager = ManagerFactory.create()
        response = api_as(manager).post(
            "/api/v1/clients/", {**GOOD, "username": "acme"}, format="json"
        )
        assert response.status_code == 201
        assert response.json()["role"] == "client"
        assert User.objects.get(username="acme").role == Role.CLIENT


def test_unknown_api_path_is_a_json_404(api: APIClient) -> None:
    assert_error(api.get("/api/v1/no-such-thing/"), 404, "not_found")
