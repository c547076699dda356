from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from crowd.management.commands.seed_demo import DEMO_ACCOUNTS
from crowd.models import Role, User

pytestmark = pytest.mark.django_db


def test_createuser_makes_a_manager_who_can_log_in() -> None:
    call_command("createuser", "boss", "--role", "manager", "--password", "a-strong-pass-77")
    user = User.objects.get(username="boss")
    assert user.role == Role.MANAGER
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "boss", "password": "a-strong-pass-77"}
    )
    assert response.status_code == 200


def test_createuser_refuses_a_duplicate_and_a_weak_password() -> None:
    call_command("createuser", "boss", "--role", "client", "--password", "a-strong-pass-77")
    with pytest.raises(CommandError, match="already exists"):
        call_command("createuser", "Boss", "--role", "manager", "--password", "a-strong-pass-77")
    with pytest.raises(CommandError, match="password"):
        call_command("createuser", "other", "--role", "worker", "--password", "123")
    assert User.objects.count() == 1


def test_seed_demo_is_idempotent_and_its_credentials_work() -> None:
    call_command("seed_demo")
    call_command("seed_demo")
    assert User.objects.count() == len(DEMO_ACCOUNTS)
    for username, role, password in DEMO_ACCOUNTS:
        assert User.objects.get(username=username).role == role
        token = APIClient().post(
            "/api/v1/auth/token/", {"username": username, "password": password}
        )
        assert token.status_code == 200, username
