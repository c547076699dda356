"""The simulated crowd's accounts (workers and the manager), made by the service a real sign-up
goes through, with passwords derived from the site's secret key."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

from crowd.errors import DomainError
from crowd.models import User
from crowd.services import user_create
from frontend.sim.errors import SimError


def sim_password(username: str) -> str:
    """The password of a simulated account: derived from the site's secret key, so a later
    run (in-process or over HTTP, with the same key) can log in again, and nobody else can."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"crowdsim:{username}".encode(), hashlib.sha256
    ).hexdigest()
    return f"sim-{digest[:24]}"


def account_ensure(username: str, role: str, *, password: str | None = None) -> tuple[User, bool]:
    """The account, created if missing (returns whether it was); it must have ``role``."""
    user = User.objects.filter(username__iexact=username).first()
    if user is not None:
        if user.role != role:
            raise SimError(f"{user.username!r} exists but is a {user.role}, not a {role}.")
        return user, False
    try:
        user = user_create(
            username=username, password=password or sim_password(username),
            email=f"{username}@sim.invalid", role=role,
        )  # fmt: skip
    except DomainError as exc:
        raise SimError(f"Cannot create {username!r}: {exc.errors or exc.detail}") from None
    return user, True
