"""Accounts: register, token, session log-in/out, ``/me/``, and managers creating clients."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import login, logout
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from crowd import services
from crowd.models import Role, User
from crowd.permissions import IsManager, request_user
from crowd.profile import me_contributions
from crowd.throttles import ScopedRateThrottle
from crowd.tokens import tokens_forget_for_user


class CredentialsIn(serializers.Serializer):
    username = serializers.CharField(max_length=150, trim_whitespace=False)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class RegisterIn(CredentialsIn):
    email = serializers.CharField(max_length=254, allow_blank=True, required=False, default="")


class UserOut(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField(help_text="worker, manager or client.")


class MoneyOut(serializers.Serializer):
    amount = serializers.CharField(help_text='A decimal string in the major unit ("12.34").')
    currency = serializers.CharField(help_text="ISO 4217 code.")


class SuspensionOut(serializers.Serializer):
    project = serializers.IntegerField()
    reason = serializers.CharField(help_text="Why, as the worker is told.")


class MeOut(UserOut):
    email = serializers.CharField()
    balance = MoneyOut(help_text="Workers: the balance in the default currency; others: zero.")
    score = serializers.FloatField(
        allow_null=True, help_text="Workers: the mean quality score, 0..1; null without one."
    )
    # Workers only, contributed by the money and quality apps.
    balances = MoneyOut(many=True, required=False, help_text="Workers: each currency held.")
    hourly_rates = MoneyOut(
        many=True,
        required=False,
        help_text="Workers: earnings per hour of active time, per currency.",
    )
    suspensions = SuspensionOut(
        many=True, required=False, help_text="Workers: the projects they are suspended from."
    )


class TokenOut(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")


def _user_json(user: User) -> dict[str, Any]:
    return {"id": user.pk, "username": user.username, "role": user.role}


def me_json(user: User) -> dict[str, Any]:
    return {**_user_json(user), "email": user.email, **me_contributions.collect(user)}


class _AnonymousApi(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]


class RegisterApi(_AnonymousApi):
    """Sign up as a worker. Managers and clients are made by operators or managers."""

    throttle_scope = "register"

    @extend_schema(
        request=RegisterIn,
        responses={201: UserOut},
        description="Creates a worker account; open to anyone (throttled per client address). "
        "Managers and clients are created by operators, or by managers through /clients/.",
    )
    def post(self, request: Request) -> Response:
        data = RegisterIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(**data.validated_data, role=Role.WORKER)
        return Response(_user_json(user), status=status.HTTP_201_CREATED)


class TokenApi(_AnonymousApi):
    throttle_scope = "auth"

    @extend_schema(
        request=CredentialsIn,
        responses={200: TokenOut},
        description="Exchanges a username and password for the user's API token, for scripts. "
        "The same token is returned until it is rotated.",
    )
    def post(self, request: Request) -> Response:
        data = CredentialsIn(data=request.data)
        data.is_valid(raise_exception=True)
        token = services.token_obtain(**data.validated_data)
        return Response({"token": token.key})


@method_decorator(ensure_csrf_cookie, name="dispatch")
class LoginApi(_AnonymousApi):
    """Session log-in for the pages; sets the CSRF cookie their later writes need."""

    throttle_scope = "auth"

    @extend_schema(
        request=CredentialsIn,
        responses={200: MeOut},
        description="Starts a browser session (session and CSRF cookies) and returns the user "
        "as /me/ shows them. Scripts use a token instead.",
    )
    def post(self, request: Request) -> Response:
        data = CredentialsIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_authenticate(**data.validated_data)
        login(request._request, user, backend="crowd.backends.CaseInsensitiveModelBackend")
        return Response(me_json(user))


class LogoutApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        request=None,
        responses={204: None},
        description="Ends the browser session, if any; answers 204 with no body either way.",
    )
    def post(self, request: Request) -> Response:
        user = request.user
        logout(request._request)
        if isinstance(user, User):
            tokens_forget_for_user(user_id=user.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={200: MeOut},
        description="The signed-in user: account, role, balance and quality score (workers also "
        "get every currency they hold, hourly rates and suspensions).",
    )
    def get(self, request: Request) -> Response:
        user = request_user(request)
        return Response(me_json(user))


class TokenRotateApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={200: TokenOut},
        description="Replaces the caller's API token with a new one; the old token stops "
        "working at once.",
    )
    def post(self, request: Request) -> Response:
        user = request_user(request)
        return Response({"token": services.token_rotate(user=user).key})


class ClientCreateApi(APIView):
    """Managers create client accounts for the people who will download their datasets."""

    permission_classes = [IsManager]

    @extend_schema(
        request=RegisterIn,
        responses={201: UserOut},
        description="Managers only: creates a client account, who can then be given read "
        "access to a project's datasets through /projects/{id}/clients/.",
    )
    def post(self, request: Request) -> Response:
        data = RegisterIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(**data.validated_data, role=Role.CLIENT)
        return Response(_user_json(user), status=status.HTTP_201_CREATED)
