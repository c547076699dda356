"""Writes on people: accounts and API tokens."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from rest_framework.authtoken.models import Token

from crowd.errors import InvalidInput
from crowd.models import Role, User

_TAKEN = "A user with that username already exists."


@transaction.atomic
def user_create(*, username: str, password: str, email: str = "", role: str = Role.WORKER) -> User:
    """Create an account after checking the username, email and password like Django's forms.

    Usernames are unique regardless of case; a concurrent duplicate that slips past the check
    is stopped by the database constraint and reported the same way.
    """
    errors: dict[str, list[str]] = {}
    if role not in Role.values:
        errors["role"] = [f"Role must be one of: {', '.join(Role.values)}."]
    user = User(username=username, email=User.objects.normalize_email(email), role=role)
    try:
        user.full_clean(exclude=["password"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if email:
        try:
            validate_email(email)
        except ValidationError as exc:
            errors["email"] = list(exc.messages)
    if "username" not in errors and User.objects.filter(username__iexact=username).exists():
        errors["username"] = [_TAKEN]
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        errors["password"] = list(exc.messages)
    if errors:
        raise InvalidInput(errors=errors)

    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:
        raise InvalidInput(errors={"username": [_TAKEN]}) from None
    return user


def user_authenticate(*, username: str, password: str) -> User:
    """The user with these credentials, or InvalidInput."""
    user = authenticate(username=username, password=password)
    if not isinstance(user, User):
        # One message for unknown user, wrong password and disabled account: no user probing.
        raise InvalidInput(
            "Unable to log in with the username and password given.", code="invalid_credentials"
        )
    return user


def token_obtain(*, username: str, password: str) -> Token:
    """The API token for these credentials, created on first use."""
    user = user_authenticate(username=username, password=password)
    token, _ = Token.objects.get_or_create(user=user)
    return token


def token_rotate(*, user: User) -> Token:
    """Replace the user's token, e.g. after it leaked; the old one stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)
